package syslog

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// evictAfter is how long a connection must have delivered no frame before
// a new connection may evict it from a full table: a sender that is
// sending is never pushed out by one that only connects.
const evictAfter = time.Second

// Reasons a connection is refused or closed early: values of the reason
// label of outpost_syslog_rejected_connections_total.
const (
	rejectFull      = "max_connections"            // the table is full of active connections
	rejectPerSource = "max_connections_per_source" // the source address has its share
	rejectNotAllow  = "not_allowed"                // the source address is not in allow
)

// connTable is the open TCP connections of one Run, over all listeners:
// at most max in all and perSource per source address. When it is full, a
// new connection takes the place of the one that has been idle longest, if
// that one has been idle for evictAfter: idle connections, however many,
// cannot keep a new sender out.
type connTable struct {
	max, perSource int

	open  prometheus.Gauge // the table's size
	mu    sync.Mutex
	conns map[*tableConn]struct{}
	bySrc map[netip.Addr]int
}

// tableConn is one connection in the table.
type tableConn struct {
	conn    net.Conn
	src     netip.Addr
	active  atomic.Int64 // when it last delivered a frame (or opened), Unix ns
	evicted atomic.Bool
}

func newConnTable(max, perSource int, open prometheus.Gauge) *connTable {
	return &connTable{max: max, perSource: perSource, open: open,
		conns: make(map[*tableConn]struct{}), bySrc: make(map[netip.Addr]int)}
}

// admit adds conn, evicting the longest-idle connection if the table is
// full. It returns the entry, or "" and the reason it refused conn.
func (t *connTable) admit(conn net.Conn, src netip.Addr, now time.Time) (*tableConn, string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.bySrc[src] >= t.perSource {
		return nil, rejectPerSource
	}
	if len(t.conns) >= t.max {
		var victim *tableConn
		for c := range t.conns {
			if victim == nil || c.active.Load() < victim.active.Load() {
				victim = c
			}
		}
		if victim == nil || now.Sub(time.Unix(0, victim.active.Load())) < evictAfter {
			return nil, rejectFull
		}
		t.removeLocked(victim)
		victim.evicted.Store(true)
		// Wake its reader, which sees evicted and closes quietly; frames
		// it holds were handed on before it waited for the network. Its
		// writes too (RELP answers, a TLS record): a peer that does not
		// read must not keep the connection alive past its slot.
		victim.conn.SetDeadline(time.Unix(1, 0))
	}
	c := &tableConn{conn: conn, src: src}
	c.active.Store(now.UnixNano())
	t.conns[c] = struct{}{}
	t.bySrc[src]++
	t.open.Inc()
	return c, ""
}

// remove takes c out of the table, unless it was evicted (and so already
// removed). It reports whether c was still there.
func (t *connTable) remove(c *tableConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.conns[c]; !ok {
		return false
	}
	t.removeLocked(c)
	return true
}

func (t *connTable) removeLocked(c *tableConn) {
	delete(t.conns, c)
	t.open.Dec()
	if t.bySrc[c.src]--; t.bySrc[c.src] <= 0 {
		delete(t.bySrc, c.src)
	}
}

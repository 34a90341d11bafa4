package syslog

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// errShuttingDown ends a connection's reads when Run stops.
var errShuttingDown = errors.New("syslog source shutting down")

// errEvicted ends the reads of a connection a new one took the place of.
var errEvicted = errors.New("syslog connection evicted: the table is full")

// serveTCP accepts connections until the listener is closed. Each
// connection gets one goroutine, counted in wg so Run waits for it.
func (r *run) serveTCP(l *streamListener, wg *sync.WaitGroup) {
	var delay time.Duration
	for {
		conn, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || r.ctx.Err() != nil {
				return
			}
			// Typically EMFILE: back off, as net/http does, and retry.
			r.m.errors.WithLabelValues(errAccept).Inc()
			r.logProblem(errAccept, "accepting a syslog connection failed", "err", err)
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		src := connAddr(conn).Addr()
		if !l.allow.allows(src) {
			r.m.rejectedConns.WithLabelValues(rejectNotAllow).Inc()
			r.logProblem("rejected_"+rejectNotAllow, "syslog connection refused: the sender is not in allow",
				"sender", connSender(conn), "listener", l.Addr().String())
			conn.Close()
			continue
		}
		entry, reason := r.conns.admit(conn, src, time.Now())
		if entry == nil {
			r.m.rejectedConns.WithLabelValues(reason).Inc()
			r.logProblem("rejected_"+reason, "syslog connection rejected: "+reason+" are open",
				"sender", connSender(conn), "max_connections", r.cfg.MaxConnections,
				"max_connections_per_source", r.cfg.MaxConnectionsPerSource)
			conn.Close()
			continue
		}
		wg.Go(func() {
			defer r.conns.remove(entry)
			conn := entry.conn
			if l.tls != nil {
				tc, ok := r.handshake(entry, l.tls)
				if !ok {
					return
				}
				conn = tc
			}
			if l.relp {
				r.serveRELP(entry, conn, l.transport)
				return
			}
			r.serveConn(entry, conn, l.transport)
		})
	}
}

// handshake runs the TLS handshake of a new connection, bounded by
// handshake_timeout and by Run's end. A failure is counted by reason,
// logged (rate-limited) and closes the connection; it touches no other.
func (r *run) handshake(entry *tableConn, srv *tlsServer) (*tls.Conn, bool) {
	conn := entry.conn
	tc := tls.Server(conn, srv.config())
	conn.SetDeadline(time.Now().Add(r.cfg.HandshakeTimeout))
	err := tc.HandshakeContext(r.ctx)
	if err == nil {
		conn.SetDeadline(time.Time{})
		return tc, true
	}
	conn.Close()
	switch {
	case r.ctx.Err() != nil:
	case entry.evicted.Load():
		r.m.evictedConns.Inc()
	default:
		reason := handshakeReason(err)
		r.m.tlsHandshake.WithLabelValues(reason).Inc()
		r.logProblem("tls_"+reason, "syslog TLS handshake failed: connection closed",
			"sender", connSender(conn), "listener", srv.listen, "reason", reason, "err", err)
	}
	return nil, false
}

// serveConn reads frames from one connection until the peer closes it, it
// stays idle past the idle timeout, or Run stops. It only frames: frames go
// in chunks to the parsers (parseChunks), so one busy sender is parsed on
// every core, and each chunk is published only after the one before it
// from the same connection, so a connection's events keep their order.
func (r *run) serveConn(entry *tableConn, conn net.Conn, transport string) {
	defer conn.Close()
	sender := connSender(conn)
	events := r.m.events[transport]
	cr := &connReader{conn: conn, idle: r.cfg.IdleTimeout, frameTimeout: r.cfg.FrameTimeout, bytes: r.m.bytes[transport], entry: entry}
	stop := context.AfterFunc(r.ctx, func() { cr.shutdown(time.Now().Add(r.drainTimeout / 2)) })
	defer stop()
	cut := 0 // frames read at shutdown that will not be published
	defer func() {
		if cut > 0 {
			r.cutLines(cut)
		}
	}()
	fr := NewFramer(cr, int(r.cfg.MaxMessageSize))
	cr.fr = fr
	turn := make(chan struct{}) // the first chunk's turn to publish has come
	close(turn)
	c := newChunk(sender, events, turn)
	sent := true
	// send hands the chunk to the parsers; sent is false once Run gives up
	// on publishing (the sink failed or the drain timed out).
	send := func() {
		if len(c.ends) == 0 || !sent {
			return
		}
		next := c.next // once sent, c may be parsed, pooled and reused at once
		select {
		case r.chunks <- c:
			c = newChunk(sender, events, next)
		case <-r.pubCtx.Done():
			// The stop timeout passed: what is read from now on is
			// only counted.
			sent = false
			cut += len(c.ends)
			cr.cut = true
		}
	}
	cr.beforeRead = send
	defer send()
	for {
		frame, err := fr.Next()
		var fe *FrameError
		switch {
		case err == nil && cr.cut:
			cut++ // read after the drain's bound, only to count it
			continue
		case err == nil:
			c.add(frame)
			if len(c.ends) >= chunkFrames || len(c.data) >= chunkBytes {
				send()
			}
			if r.failure() != nil {
				return // the sink failed; Run is stopping
			}
			continue
		case errors.As(err, &fe) && fe.Kind == KindRELP:
			// Not syslog input, so not dead-lettered: the sender needs
			// reconfiguring, and the log line says how.
			r.m.errors.WithLabelValues(KindRELP).Inc()
			r.logProblem(KindRELP, "RELP sender refused on a plain syslog TCP port: point omrelp at an ingest.syslog.relp listener, "+
				"or use omfwd with protocol=\"tcp\" TCP_Framing=\"octet-counted\" (or TLS)", "sender", sender)
			return
		case errors.As(err, &fe):
			err = r.reject(fe.Kind, fe.Error(), fe.Sample, sender)
		case err == io.EOF, cr.closing.Load():
			return
		case errors.Is(err, errEvicted):
			r.m.evictedConns.Inc() // routine when the table is full
			return
		case errors.Is(err, os.ErrDeadlineExceeded) && cr.frameBound:
			r.m.errors.WithLabelValues(errFrameTimeout).Inc()
			r.logProblem(errFrameTimeout, "syslog connection closed: a frame took longer than frame_timeout to arrive",
				"sender", sender, "frame_timeout", r.cfg.FrameTimeout)
			return
		case errors.Is(err, os.ErrDeadlineExceeded):
			return // idle for too long: routine, not worth a line
		default:
			r.m.errors.WithLabelValues(errRead).Inc()
			r.logProblem(errRead, "reading syslog connection failed", "sender", sender, "err", err)
			return
		}
		if err != nil {
			return // the sink failed; Run is stopping
		}
	}
}

// Chunks of TCP frames: at most chunkFrames frames or about chunkBytes.
const (
	chunkFrames = 256
	chunkBytes  = 64 << 10
)

// parseWorkers parse and publish TCP frames, shared by every connection.
var parseWorkers = max(2, runtime.GOMAXPROCS(0))

// chunk is frames of one connection, back to back in data, frame i ending
// at ends[i]. Its events are published once turn is closed (the previous
// chunk of the connection is published), then next is closed.
type chunk struct {
	sender     string
	events     prometheus.Counter // of the connection's transport
	received   time.Time
	data       []byte
	ends       []int
	turn, next chan struct{}
}

var chunkPool = sync.Pool{New: func() any {
	return &chunk{data: make([]byte, 0, chunkBytes+4096), ends: make([]int, 0, chunkFrames)}
}}

func newChunk(sender string, events prometheus.Counter, turn chan struct{}) *chunk {
	c := chunkPool.Get().(*chunk)
	c.sender, c.events, c.data, c.ends, c.received = sender, events, c.data[:0], c.ends[:0], time.Time{}
	c.turn, c.next = turn, make(chan struct{})
	return c
}

func (c *chunk) add(frame []byte) {
	if len(c.ends) == 0 {
		c.received = time.Now()
	}
	c.data = append(c.data, frame...)
	c.ends = append(c.ends, len(c.data))
}

// parseChunks parses chunks and publishes their events, in each
// connection's order, until the channel is closed. Chunks are taken in the
// order they were sent, so the oldest chunk in hand always has its turn:
// no worker waits on one that is not being worked on.
func (r *run) parseChunks() {
	p := r.newParser()
	// The events of a chunk, parsed into the memory of the last one's:
	// the sink keeps none of them.
	var store []event.Event
	var evs []*event.Event
	for c := range r.chunks {
		evs = evs[:0]
		if len(store) < len(c.ends) {
			store = make([]event.Event, len(c.ends))
		}
		start := 0
		for _, end := range c.ends {
			msg := c.data[start:end]
			start = end
			if r.failure() != nil {
				continue
			}
			// A sink failure while dead-lettering is recorded by r.fail.
			ev := &store[len(evs)]
			if ok, _ := r.parse(p, msg, c.received, c.sender, ev); ok {
				evs = append(evs, ev)
			}
		}
		<-c.turn
		for i, ev := range evs {
			if r.failure() != nil {
				break
			}
			if r.publish(ev, c.events) != nil {
				if r.ctx.Err() != nil { // the drain timed out at shutdown
					r.cutLines(len(evs) - i)
				}
				break
			}
		}
		close(c.next)
		if cap(c.data) <= 2*chunkBytes { // an oversized frame's chunk is not kept
			chunkPool.Put(c)
		}
	}
}

func connSender(conn net.Conn) string {
	if a, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		return senderOf(a.AddrPort())
	}
	return conn.RemoteAddr().String()
}

// connAddr is the peer's address, IPv4 on a dual-stack socket as IPv4.
func connAddr(conn net.Conn) netip.AddrPort {
	if a, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// Draining a connection at shutdown.
const (
	// drainQuiet is how long a draining connection may stay silent before
	// it counts as read to the end: the kernel's queue is empty.
	drainQuiet = 20 * time.Millisecond
	// cutCountBytes bounds what is read past the drain's bound, only to
	// count the lines it holds.
	cutCountBytes = 1 << 20
)

// connReader is the connection as the Framer sees it: it counts bytes and
// applies the idle timeout. Once Run stops it drains: it reads what the
// kernel holds until the connection is quiet for drainQuiet, and then
// fails every read. If the drain's bound comes first, it sets cut and
// reads on a little, so the lines it could not publish are counted.
type connReader struct {
	conn         net.Conn
	idle         time.Duration
	frameTimeout time.Duration
	bytes        prometheus.Counter
	entry        *tableConn // its place in the table: activity, eviction
	fr           *Framer    // the Framer reading it, to tell a frame's reads
	// frameStart is when the frame being read began to arrive, at Next
	// call frameCall; frameBound says the last deadline set was the
	// frame's, not the idle timeout's. Only the reading goroutine uses them.
	frameStart time.Time
	frameCall  uint64
	frameBound bool
	lastCall   uint64 // the Next call of the last read, for activity
	closing    atomic.Bool
	until      atomic.Int64 // when the drain must end, Unix ns; set before closing
	// cut is set when the drain reached its bound with input still coming.
	// Only the reading goroutine touches it.
	cut      bool
	cutBytes int
	// beforeRead, if set, runs before every read of the connection: frames
	// in hand must not wait on the network.
	beforeRead func()
}

func (c *connReader) Read(p []byte) (int, error) {
	if c.beforeRead != nil {
		c.beforeRead()
	}
	// Both ways: over TLS a Read may write (a TLS 1.3 KeyUpdate answer),
	// and a peer that does not read must not block it past the deadline.
	c.conn.SetDeadline(c.deadline(time.Now()))
	// Checked after setting the deadline. shutdown (and eviction) stores
	// its flag, then sets a deadline in the past: either this load sees
	// the flag, or that past deadline comes after ours and the Read below
	// fails at once.
	if c.closing.Load() {
		return c.drainRead(p)
	}
	if c.entry != nil && c.entry.evicted.Load() {
		return 0, errEvicted
	}
	n, err := c.conn.Read(p)
	c.bytes.Add(float64(n))
	if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		if c.closing.Load() {
			return c.drainRead(p) // woken by shutdown, not idle
		}
		if c.entry != nil && c.entry.evicted.Load() {
			return 0, errEvicted
		}
	}
	return n, err
}

// deadline returns the read deadline at now: the idle timeout, or the
// frame's if a frame is being read and it comes first. It also records
// the connection's activity (a new frame since the last read) for the
// table's eviction.
func (c *connReader) deadline(now time.Time) time.Time {
	var d time.Time
	if c.idle > 0 {
		d = now.Add(c.idle)
	}
	c.frameBound = false
	if c.fr == nil {
		return d
	}
	if c.entry != nil && c.fr.results != c.lastCall {
		c.lastCall = c.fr.results
		c.entry.active.Store(now.UnixNano())
	}
	if c.frameTimeout <= 0 || !c.fr.inFrame {
		return d
	}
	if c.frameCall != c.fr.results || c.frameStart.IsZero() {
		c.frameStart, c.frameCall = now, c.fr.results
	}
	if fd := c.frameStart.Add(c.frameTimeout); d.IsZero() || fd.Before(d) {
		d, c.frameBound = fd, true
	}
	return d
}

// drainRead reads what the kernel has queued, waiting at most drainQuiet
// for it, and never past the drain's bound (then it sets cut).
func (c *connReader) drainRead(p []byte) (int, error) {
	now := time.Now()
	deadline := now.Add(drainQuiet)
	if !c.cut {
		if until := time.Unix(0, c.until.Load()); !now.Before(until) {
			c.cut = true
		} else if deadline.After(until) {
			deadline = until
		}
	}
	if c.cut {
		if c.cutBytes >= cutCountBytes {
			return 0, errShuttingDown
		}
		p = p[:min(len(p), cutCountBytes-c.cutBytes)]
	}
	c.conn.SetDeadline(deadline)
	n, err := c.conn.Read(p)
	c.bytes.Add(float64(n))
	if c.cut {
		c.cutBytes += n
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if n > 0 {
			return n, nil
		}
		if !c.cut && !time.Now().Before(time.Unix(0, c.until.Load())) {
			c.cut = true // the bound came first: read on only to count
			return c.drainRead(p)
		}
		return 0, errShuttingDown
	}
	return n, err
}

// shutdown starts the drain, which ends at until at the latest, and wakes
// a Read blocked on the network.
func (c *connReader) shutdown(until time.Time) {
	c.until.Store(until.UnixNano())
	c.closing.Store(true)
	c.conn.SetDeadline(time.Unix(1, 0))
}

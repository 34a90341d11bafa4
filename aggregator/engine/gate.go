package engine

import (
	"fmt"
	"strings"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// MaxHostWatermarks bounds the Gate's per-host watermarks; past it they
// start over (nothing is judged late until each host is seen again), so a
// flood of forged host names costs bounded memory.
const MaxHostWatermarks = 100_000

// Gate is the lateness check: an event more than its source's allowed
// lateness behind the newest event of its (source, host) is late, and is
// not evaluated. Per host, not per source: one sender with a fast clock or
// a local-time RFC 3164 stamp must not make every other sender's events
// look late; at SeenTime (capped at reception), so a datagram claiming a
// host and stamped ahead cannot make that host's own events late either.
//
// A Gate is used by one goroutine, in the order events arrived.
type Gate struct {
	lateness  Lateness
	newest    map[hostKey]*int64 // unix ns
	bySource  map[string]int64   // LatenessFor, looked up once per source
	newestAll int64              // the newest SeenTime admitted, any host
	// Late counts the events judged late.
	Late int
}

type hostKey struct{ source, host string }

// NewGate returns a gate enforcing l.
func NewGate(l Lateness) *Gate {
	return &Gate{lateness: l, newest: map[hostKey]*int64{}, bySource: map[string]int64{}}
}

// Admit reports whether ev is in time, and moves its host's watermark on.
// A late event is counted in Late.
func (g *Gate) Admit(ev *event.Event) bool {
	k := hostKey{ev.Source, ev.Host}
	if k.host == "" {
		k.host, _, _ = strings.Cut(ev.Sender, ":")
	}
	seen := ev.SeenTime().UnixNano()
	newest := g.newest[k]
	lateness, ok := g.bySource[ev.Source]
	if !ok {
		// Source names are Outpost's own (syslog, azure.<category>): few.
		lateness = int64(g.lateness.LatenessFor(ev.Source))
		g.bySource[ev.Source] = lateness
	}
	if newest != nil && seen < *newest-lateness {
		g.Late++
		return false
	}
	g.newestAll = max(g.newestAll, seen)
	switch {
	case newest != nil && seen <= *newest:
	case newest != nil:
		*newest = seen
	default:
		if len(g.newest) >= MaxHostWatermarks {
			clear(g.newest)
		}
		newest = new(int64)
		*newest = seen
		g.newest[k] = newest
	}
	return true
}

// Newest is the newest SeenTime (unix ns) of any event the gate admitted:
// what moves the watermark on (Watermark.Observe).
func (g *Gate) Newest() int64 { return g.newestAll }

// LateReason explains why Admit refused ev, for its dead letter: the time
// it was judged at (its reception, if stamped ahead) and the lateness.
func (g *Gate) LateReason(ev *event.Event) string {
	judged := "event time " + ev.Time.Format(time.RFC3339)
	if seen := ev.SeenTime(); !seen.Equal(ev.Time) {
		judged = fmt.Sprintf("received %s (stamped %s, ahead of its reception)", seen.Format(time.RFC3339), ev.Time.Format(time.RFC3339))
	}
	return fmt.Sprintf("late: %s is more than %s behind the newest %s event from %s",
		judged, g.lateness.LatenessFor(ev.Source), ev.Source, ev.Host)
}

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
//
// Its admissions can be undone (Mark, Undo): a consumer that hands a batch
// again after a failure must judge it as it was judged the first time,
// not against the batches admitted after it.
type Gate struct {
	lateness  Lateness
	newest    map[hostKey]*watermark
	bySource  map[string]int64 // LatenessFor, looked up once per source
	newestAll int64            // the newest SeenTime admitted, any host
	// Late counts the events judged late.
	Late int

	// journal[head:], once Mark was called, holds what each admission
	// since the oldest Mark not forgotten changed, oldest first; forgotten
	// counts the entries dropped from its front (Marks are absolute
	// positions: forgotten + index - head).
	journal    []undo
	head       int // journal[:head] is forgotten, not yet reclaimed
	journaling bool
	forgotten  int

	// Once Track was called, changed lists the hosts whose watermark an
	// admission moved since the last Changes (each once: its watermark's
	// stamp is the Gate's), cleared whether they all started over meanwhile.
	tracking bool
	changed  []hostKey
	cleared  bool
	stamp    uint64
}

// watermark is a host's newest SeenTime admitted (unix ns), and the Gate's
// stamp when it was last listed in changed.
type watermark struct {
	newest int64
	stamp  uint64
}

// undo is one change an admission made: a host's watermark moved from
// prev (p), a host added (k), or every watermark dropped (cleared, the map
// before).
type undo struct {
	p       *watermark
	prev    int64
	k       hostKey
	cleared map[hostKey]*watermark
}

// Mark is a point in a Gate's admissions, to Undo back to.
type Mark struct {
	pos       int
	newestAll int64
}

type hostKey struct{ source, host string }

// NewGate returns a gate enforcing l.
func NewGate(l Lateness) *Gate {
	return &Gate{lateness: l, newest: map[hostKey]*watermark{}, bySource: map[string]int64{}}
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
		g.bySource[strings.Clone(ev.Source)] = lateness // not a substring of ev's record: kept
	}
	if newest != nil && seen < newest.newest-lateness {
		g.Late++
		return false
	}
	g.newestAll = max(g.newestAll, seen)
	switch {
	case newest != nil && seen <= newest.newest:
		return true
	case newest != nil:
		if g.journaling {
			g.journal = append(g.journal, undo{p: newest, prev: newest.newest})
		}
		newest.newest = seen
	default:
		g.makeRoom()
		// Kept as long as the host is: decoded from EVENTS, ev's strings
		// are substrings of its whole record, which they would keep alive.
		k = hostKey{strings.Clone(k.source), strings.Clone(k.host)}
		newest = &watermark{newest: seen}
		g.newest[k] = newest
		if g.journaling {
			g.journal = append(g.journal, undo{k: k})
		}
	}
	if g.tracking && newest.stamp != g.stamp {
		newest.stamp = g.stamp
		g.changed = append(g.changed, k)
	}
	return true
}

// makeRoom, before a host is added, starts every watermark over if there
// are MaxHostWatermarks already.
func (g *Gate) makeRoom() {
	if len(g.newest) < MaxHostWatermarks {
		return
	}
	if g.journaling {
		// Keep the map to put back; a new one for what follows.
		g.journal = append(g.journal, undo{cleared: g.newest})
		g.newest = make(map[hostKey]*watermark, len(g.newest))
	} else {
		clear(g.newest)
	}
	if g.tracking {
		g.changed, g.cleared = g.changed[:0], true
		g.stamp++
	}
}

// Track makes the gate list the watermarks its admissions move, for
// Changes: a record of them kept durable with the events' acks lets a
// restarted gate judge the events handed again as this one did.
func (g *Gate) Track() {
	g.tracking = true
	g.stamp++
}

// Changes calls each with every host's watermark an admission moved since
// the last Changes (or Track, or Undo), as it is now, and returns whether
// every watermark started over first (MaxHostWatermarks), and Newest.
func (g *Gate) Changes(each func(source, host string, newest int64)) (cleared bool, newestAll int64) {
	for _, k := range g.changed {
		if w := g.newest[k]; w != nil {
			each(k.source, k.host, w.newest)
		}
	}
	cleared = g.cleared
	clear(g.changed)
	g.changed, g.cleared = g.changed[:0], false
	g.stamp++
	return cleared, g.newestAll
}

// Watermarks calls each with every host's watermark.
func (g *Gate) Watermarks(each func(source, host string, newest int64)) {
	for k, w := range g.newest {
		each(k.source, k.host, w.newest)
	}
}

// Restore sets a host's watermark, or with clear every watermark starting
// over, and newestAll (if newer), as a record of Changes says: to put back
// a gate's watermarks as of what a restarted consumer is handed first.
// Call it before the first Mark.
func (g *Gate) Restore(source, host string, newest int64) {
	k := hostKey{source, host}
	if w := g.newest[k]; w != nil {
		w.newest = newest
		return
	}
	g.makeRoom()
	g.newest[k] = &watermark{newest: newest}
}

// RestoreClear starts every watermark over, and RestoreNewest sets
// Newest, as Restore does a host's.
func (g *Gate) RestoreClear()         { clear(g.newest) }
func (g *Gate) RestoreNewest(n int64) { g.newestAll = n }

// Mark returns the point the gate is at, and from then on records what
// its admissions change so that Undo can take them back. Forget what no
// longer needs undoing: the record grows with every admission until then.
func (g *Gate) Mark() Mark {
	g.journaling = true
	return Mark{pos: g.forgotten + len(g.journal) - g.head, newestAll: g.newestAll}
}

// Undo takes back every admission since m: the gate judges the events
// admitted since as it judged them the first time. m must not be older
// than a Forget.
func (g *Gate) Undo(m Mark) {
	from := m.pos - g.forgotten + g.head
	if from < g.head {
		panic("engine: Gate.Undo to a forgotten mark")
	}
	for i := len(g.journal) - 1; i >= from; i-- {
		switch u := g.journal[i]; {
		case u.cleared != nil:
			g.newest = u.cleared
		case u.p != nil:
			u.p.newest = u.prev
		default:
			delete(g.newest, u.k)
		}
		g.journal[i] = undo{}
	}
	g.journal = g.journal[:from]
	g.newestAll = m.newestAll
	if g.tracking {
		// What was listed since the last Changes is undone.
		clear(g.changed)
		g.changed, g.cleared = g.changed[:0], false
		g.stamp++
	}
}

// Forget drops what Undo would need to go back before m: the admissions
// before it are final. The record's front is reclaimed once it is the
// larger part, so forgetting batch after batch costs no more than the
// admissions did.
func (g *Gate) Forget(m Mark) {
	n := min(m.pos-g.forgotten, len(g.journal)-g.head)
	if n <= 0 {
		return
	}
	clear(g.journal[g.head : g.head+n])
	g.head += n
	g.forgotten += n
	if g.head > len(g.journal)/2 {
		rest := copy(g.journal, g.journal[g.head:])
		clear(g.journal[rest:])
		g.journal = g.journal[:rest]
		g.head = 0
	}
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

package engine

import (
	"github.com/expr-lang/expr/vm"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

// Evaluator turns events into matches: each rule's guards and single-event
// condition (compiled expr programs), then its group key and value fields.
// It is stateless apart from scratch space; one per goroutine.
type Evaluator struct {
	vm   vm.VM
	hits []rules.Hit
	// m is the match Evaluate hands to emit, which must not keep it: one
	// on the heap per match was a third of the rule filter's allocations.
	m event.Match
	// Scratch is for rules.Set.Candidates.
	Scratch rules.Scratch

	// NoKey, if set, is told how many satisfied steps of r were skipped
	// because a group_by (or value) field was empty.
	NoKey func(r *rules.Rule, n int)
	// Failed, if set, is told that r's condition failed at run time on
	// ev; that counts as no match.
	Failed func(r *rules.Rule, ev *event.Event, err error)
}

// Hits evaluates r on ev. The slice is reused by the next call.
func (e *Evaluator) Hits(r *rules.Rule, ev *event.Event) (hits []rules.Hit, noKey int, err error) {
	e.hits, noKey, err = r.Evaluate(&e.vm, ev, e.hits[:0])
	return e.hits, noKey, err
}

// Evaluate runs every rule of rs on ev, in order, and calls emit with
// each match (emit must not keep m). An error from emit stops it.
func (e *Evaluator) Evaluate(rs []*rules.Rule, ev *event.Event, emit func(r *rules.Rule, m *event.Match) error) error {
	for _, r := range rs {
		hits, noKey, err := e.Hits(r, ev)
		if err != nil {
			if e.Failed != nil {
				e.Failed(r, ev, err)
			}
			continue
		}
		if noKey > 0 && e.NoKey != nil {
			e.NoKey(r, noKey)
		}
		for _, h := range hits {
			e.m = NewMatch(r, ev, h)
			if err := emit(r, &e.m); err != nil {
				return err
			}
		}
	}
	return nil
}

// NewMatch is the match of hit h of rule r on ev: what the windows need of
// the event, and the fields the rule carries into its alert.
func NewMatch(r *rules.Rule, ev *event.Event, h rules.Hit) event.Match {
	m := event.Match{
		RuleID: r.ID, Key: h.Key, Time: ev.Time, EventID: ev.ID,
		Step: h.Step, Value: h.Value, Seen: ev.SeenTime(),
	}
	// Encoded, not a map: most matches never raise an alert, and the
	// filter writes them to MATCHES as they are.
	if f := r.EncodedCarriedFields(ev); f != nil {
		m.SetEncodedFields(f)
	}
	return m
}

// Coalescable reports whether r's matches may go through a Coalescer: an
// absence rule without `expect` (a source going silent: every event of the
// key matches).
func Coalescable(r *rules.Rule) bool { return r.Kind == rules.KindAbsence && len(r.Steps) == 1 }

// Coalescer passes on the matches of Coalescable rules sparingly. Applied
// to the key's state, such a match only moves the deadline to its time
// plus `for`, or reports a silence if it comes after the deadline. So of
// the matches after a passed one (the anchor) and within `for` of it, only
// the newest changes anything: each one held back is replaced by a newer
// one, and the last is passed on at Flush, or as soon as a match outside
// (anchor, anchor+for] arrives, which is passed on as is. Apply ends up in
// the state every match would have given it, raising the same alerts, with
// a match per key per `for` of event time instead of one per event.
//
// The rule filter coalesces each batch of events (it saves MATCHES
// traffic); the in-memory drivers have nothing to save and do not.
type Coalescer struct {
	silences map[silenceKey]*silence
	// order is the keys of silences as first seen: Flush passes on what
	// is held in that order, so the same matches always come out in the
	// same order (the rule filter's MATCHES runs depend on it).
	order []silenceKey
	// Coalesced counts the matches held back and replaced.
	Coalesced int
}

// silence is what a Coalescer keeps per (rule, key) until Flush: the
// newest time (Match.At, where Apply places a match) of the key's matches
// passed on, and the newest match since then, held back.
type silenceKey struct{ rule, key string }

type silence struct {
	anchor  int64
	pending event.Match
	held    bool
}

// Add passes m (of rule r, Coalescable) on to emit, or holds it back.
func (c *Coalescer) Add(r *rules.Rule, m *event.Match, emit func(*event.Match) error) error {
	k := silenceKey{m.RuleID, m.Key}
	sl := c.silences[k]
	if sl == nil {
		if c.silences == nil {
			c.silences = map[silenceKey]*silence{}
		}
		sl = &silence{}
		c.silences[k] = sl
		c.order = append(c.order, k)
		sl.anchor = m.At().UnixNano()
		return emit(m)
	}
	t := m.At().UnixNano()
	inReach := t > sl.anchor && t <= sl.anchor+int64(r.For)
	if sl.held && inReach && t > sl.pending.At().UnixNano() {
		// Newer where Apply places it, so it also moves the watermark at
		// least as far as the one it replaces.
		c.Coalesced++
		sl.pending = *m
		return nil
	}
	if sl.held {
		// m is older than the one held, or beyond reach: pass on in order.
		sl.held = false
		sl.anchor = max(sl.anchor, sl.pending.At().UnixNano())
		if err := emit(&sl.pending); err != nil {
			return err
		}
		inReach = t > sl.anchor && t <= sl.anchor+int64(r.For)
	}
	if inReach {
		sl.pending, sl.held = *m, true
		return nil
	}
	sl.anchor = max(sl.anchor, t)
	return emit(m)
}

// Flush passes on the matches held back and forgets every key: at the
// end of a batch.
func (c *Coalescer) Flush(emit func(*event.Match) error) error {
	for _, k := range c.order {
		if sl := c.silences[k]; sl.held {
			if err := emit(&sl.pending); err != nil {
				return err
			}
			sl.held = false
		}
	}
	clear(c.silences)
	clear(c.order)
	c.order = c.order[:0]
	return nil
}

// Reset forgets what is held, without passing it on: the batch will be
// evaluated again.
func (c *Coalescer) Reset() {
	clear(c.silences)
	clear(c.order)
	c.order = c.order[:0]
}

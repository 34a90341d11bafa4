package engine

import (
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

// Local runs the whole engine in memory on one goroutine, in the order
// events are given: the Gate, the Evaluator, Windows over a MemStore, the
// Watermark (no idle advance: time is the events') and the deadlines it
// passes, fired after each event's matches as the windows stage would.
// `rules test` drives it; `rules replay` drives the same pieces spread
// over goroutines.
type Local struct {
	Gate      *Gate
	Watermark *Watermark
	Store     *MemStore

	rules   []*rules.Rule
	index   *rules.Index
	byID    map[string]*rules.Rule
	eval    Evaluator
	windows *Windows
	out     []*event.Alert
	evalErr error
}

// NewLocal returns an engine running rs with lateness l.
func NewLocal(rs []*rules.Rule, l Lateness) *Local {
	lo := &Local{
		Gate: NewGate(l), Watermark: NewWatermark(l.AllowedLateness, 0, nil), Store: NewMemStore(),
		rules: rs, index: rules.NewIndex(rs), byID: make(map[string]*rules.Rule, len(rs)), windows: NewWindows(l),
	}
	for _, r := range rs {
		lo.byID[r.ID] = r
	}
	lo.eval.Failed = func(r *rules.Rule, ev *event.Event, err error) {
		if lo.evalErr == nil {
			lo.evalErr = &EvalError{Rule: r.ID, Event: ev.ID, Err: err}
		}
	}
	return lo
}

// EvalError is a rule's condition failing at run time on an event.
type EvalError struct {
	Rule, Event string
	Err         error
}

func (e *EvalError) Error() string {
	return "rule " + e.Rule + " on event " + e.Event + ": " + e.Err.Error()
}
func (e *EvalError) Unwrap() error { return e.Err }

// Event runs ev through the engine and returns the alerts it raised,
// including deadlines the watermark passed after it. A late event raises
// nothing (Gate.Late counts it). The error is the first condition that
// failed at run time; evaluation goes on without it.
func (lo *Local) Event(ev *event.Event) ([]*event.Alert, error) {
	lo.out = lo.out[:0]
	if !lo.Gate.Admit(ev) {
		return nil, nil
	}
	lo.Watermark.Observe(lo.Gate.Newest())
	err := lo.eval.Evaluate(lo.index.Candidates(ev, &lo.eval.Scratch), ev, func(r *rules.Rule, m *event.Match) error {
		res, err := lo.windows.Apply(lo.Store, r, m)
		if res.Alert != nil {
			lo.out = append(lo.out, res.Alert)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	lo.fire(lo.Watermark.At())
	err, lo.evalErr = lo.evalErr, nil
	return lo.out, err
}

// Finish fires the deadlines the watermark passes once moved advance past
// the newest match: the end of the input.
func (lo *Local) Finish(advance time.Duration) []*event.Alert {
	lo.out = lo.out[:0]
	lo.fire(lo.Watermark.Advanced(advance))
	return lo.out
}

func (lo *Local) fire(wm int64) {
	if next := lo.Store.NextDeadline(); next == 0 || next >= wm {
		return
	}
	// A MemStore never fails.
	_, _ = lo.windows.FireDue(lo.Store, lo.rule, wm, 0, func(_ *rules.Rule, _ Deadline, a *event.Alert, _ Verdict) {
		if a != nil {
			lo.out = append(lo.out, a)
		}
	})
}

func (lo *Local) rule(id string) *rules.Rule { return lo.byID[id] }

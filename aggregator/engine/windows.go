package engine

import (
	"errors"
	"fmt"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

// ErrKeyCap is returned by Txn.State for a new key of a rule at its cap of
// live group keys (windows.max_keys_per_rule).
var ErrKeyCap = errors.New("rule at its cap of live group keys")

// Txn is one batch's view of the window states, the store contract:
//
//   - State returns the state of (rule, key) for the batch, loaded once
//     per batch; the engine changes it in place. What the batch changed
//     becomes durable (or is discarded) as the store and its driver decide,
//     as a whole: the windows stage commits a batch only after the alerts
//     it raised were acked, so a crash replays the batch onto the states
//     before it, which gives the same alerts with the same ids.
//   - A key not yet stored counts against its rule's cap of live keys when
//     capped; at the cap State refuses it with ErrKeyCap.
//   - Armed is called after a change moved a state's deadline to a
//     non-zero time (was: the deadline before). Due lists deadlines the
//     watermark passed, earliest first; it may list stale ones (moved or
//     disarmed since), which FireDue recognises against the state and hands
//     back to Drop.
type Txn interface {
	State(r *rules.Rule, key string, capped bool) (*State, error)
	Armed(r *rules.Rule, key string, st *State, was int64)
	Due(watermark int64, limit int) ([]Deadline, error)
	Drop(d Deadline)
}

// Deadline is an armed absence deadline of one (rule, group key).
type Deadline struct {
	At          int64 // unix ns
	Rule        string
	Fingerprint string // the rule's, when armed: an edited rule starts afresh
	Key         string
	Ref         any // the store's own handle
}

// Windows is the window logic over a store: Apply each match to its
// (rule, group key)'s State, and fire the absence deadlines a watermark
// passed. It holds no window state of its own (only what each rule keeps,
// computed once); one per goroutine.
type Windows struct {
	lateness      Lateness
	stateLateness time.Duration // l.MaxLateness()
	// keeps is each rule's keep, as computed last (bounded: emptied when
	// it holds maxKeeps rules, which a few reloads of many rules reach).
	keeps   map[*rules.Rule]time.Duration
	scratch State // the state of a stateless rule, fresh per match
}

const maxKeeps = 4096

// NewWindows returns the window logic, keeping events in a window's state
// past the window for the lateness of the sources its rule can match
// (keep).
func NewWindows(l Lateness) *Windows { return &Windows{lateness: l, stateLateness: l.MaxLateness()} }

// keep is how long past its window r's states keep an event, so that a
// straggler can still complete a window: the largest lateness of the
// sources r can match when each of its steps requires one (rules.Rule.Sources:
// an sshd rule pinned to syslog keeps 2 minutes, not the 2 hours Azure's
// exports need), else the largest of any source. A rule judged when its
// window closes (FromState: absence, at_most) always gets the largest: its
// lateness also says when a later event proves the window closed, and its
// state is bounded by other means.
func (w *Windows) keep(r *rules.Rule) time.Duration {
	if d, ok := w.keeps[r]; ok {
		return d
	}
	d := w.stateLateness
	if srcs := r.Sources(); srcs != nil && !FromState(r) {
		d = 0
		for _, src := range srcs {
			d = max(d, w.lateness.LatenessFor(src))
		}
	}
	if w.keeps == nil || len(w.keeps) >= maxKeeps {
		w.keeps = make(map[*rules.Rule]time.Duration)
	}
	w.keeps[r] = d
	return d
}

// Applied is what became of one match.
type Applied struct {
	Alert   *event.Alert
	Verdict Verdict
	// Capped: the rule was at its key cap and the key is new. A match rule
	// fails open (a flood of keys must not blind it): it alerts without its
	// suppression state, and Verdict says so. Any other kind drops the
	// match (Dropped), and Verdict means nothing.
	Capped, Dropped bool
}

// Apply applies match m of rule r to its state in tx.
func (w *Windows) Apply(tx Txn, r *rules.Rule, m *event.Match) (Applied, error) {
	var out Applied
	st := &w.scratch
	if Stateless(r) {
		w.scratch = State{}
	} else {
		var err error
		st, err = tx.State(r, m.Key, true)
		switch {
		case errors.Is(err, ErrKeyCap):
			out.Capped = true
			if r.Kind != rules.KindMatch {
				out.Dropped = true
				return out, nil
			}
			w.scratch = State{}
			st = &w.scratch
		case err != nil:
			return out, err
		}
	}
	was := st.Deadline
	out.Alert, out.Verdict = Apply(r, st, m, w.keep(r))
	if st.Deadline != was && st.Deadline != 0 && st != &w.scratch {
		tx.Armed(r, m.Key, st, was)
	}
	return out, nil
}

// FireDue fires the absence deadlines before watermark listed by tx.Due,
// at most limit of them (< 1: all), calling fired with each deadline that
// raised an alert or was suppressed (a nil alert). rule finds a rule by
// id; a deadline whose rule is gone or was edited, or whose state no
// longer holds it, is dropped. It returns how many deadlines it looked at:
// limit means there may be more.
func (w *Windows) FireDue(tx Txn, rule func(id string) *rules.Rule, watermark int64, limit int, fired func(r *rules.Rule, d Deadline, a *event.Alert, v Verdict)) (int, error) {
	if watermark == 0 {
		return 0, nil
	}
	due, err := tx.Due(watermark, limit)
	if err != nil {
		return 0, err
	}
	for _, d := range due {
		r := rule(d.Rule)
		if r == nil || r.Fingerprint != d.Fingerprint {
			tx.Drop(d) // the rule changed or went away
			continue
		}
		st, err := tx.State(r, d.Key, false)
		if err != nil {
			return 0, fmt.Errorf("loading the state of a deadline: %w", err)
		}
		if st.Deadline != d.At {
			// Stale: the deadline moved, or the state expired by TTL while
			// its index entry stayed.
			tx.Drop(d)
			continue
		}
		a, v := Expire(r, st, d.Key, watermark)
		if st.Deadline != 0 && st.Deadline != d.At {
			// A closing window's later events opened the next one.
			tx.Armed(r, d.Key, st, d.At)
		}
		if v != Counted {
			fired(r, d, a, v)
		}
	}
	return len(due), nil
}

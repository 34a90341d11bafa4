package window

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"sort"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

// maxEvidence caps the event ids an alert carries.
const maxEvidence = 100

// groupState is the durable state of one (rule, group key).
//
// Times and IDs are parallel and sorted by event time. LastAlert is the
// event time of the last event of the last alert emitted, for suppression.
type groupState struct {
	Times     []int64  `json:"t,omitempty"` // unix nanoseconds
	IDs       []string `json:"i,omitempty"`
	LastAlert int64    `json:"a,omitempty"`
	// Spent is the event time up to which events were used by an alert
	// (suppressed or not). Events at or before it are not counted again:
	// that makes a redelivered batch idempotent even after its events left
	// Times/IDs, and a late event cannot re-open a window that fired.
	Spent int64 `json:"s,omitempty"`
}

// Verdict says what apply did with a match.
type Verdict int

// Verdicts, for metrics.
const (
	Counted    Verdict = iota // added to the window, no alert yet
	Fired                     // an alert was produced
	Suppressed                // the condition held but an alert was sent for this key within suppress
	Duplicate                 // the event was already counted (a redelivery)
)

// apply adds match m of rule r to st and returns the alert it causes, if
// any. It is deterministic: the same matches in the same order give the same
// alerts with the same ids, which is what makes redelivery safe.
//
// lateness extends how long an event stays in the state beyond its window,
// so an event arriving out of order can still complete a window.
func apply(r *rules.Rule, st *groupState, m *event.Match, lateness time.Duration) (*event.Alert, Verdict) {
	t := m.Time.UnixNano()
	switch r.Kind {
	case rules.KindMatch:
		if r.Suppress > 0 {
			if st.LastAlert != 0 && absDur(t-st.LastAlert) < r.Suppress {
				return nil, Suppressed
			}
			st.LastAlert = t
		}
		a := newAlert(r, m, alertID(r.ID, m.Key, t, m.EventID))
		a.Count, a.FirstSeen, a.LastSeen, a.EventIDs = 1, m.Time, m.Time, []string{m.EventID}
		return a, Fired
	case rules.KindThreshold:
		return applyThreshold(r, st, m, t, lateness)
	}
	return nil, Counted
}

func applyThreshold(r *rules.Rule, st *groupState, m *event.Match, t int64, lateness time.Duration) (*event.Alert, Verdict) {
	if st.Spent != 0 && t <= st.Spent {
		return nil, Duplicate
	}
	for _, id := range st.IDs {
		if id == m.EventID {
			return nil, Duplicate
		}
	}
	// Insert in event-time order.
	i := sort.Search(len(st.Times), func(i int) bool { return st.Times[i] > t })
	st.Times = append(st.Times, 0)
	copy(st.Times[i+1:], st.Times[i:])
	st.Times[i] = t
	st.IDs = append(st.IDs, "")
	copy(st.IDs[i+1:], st.IDs[i:])
	st.IDs[i] = m.EventID

	// Forget what no future window can use: older than the newest event
	// minus the window and the allowed lateness; and never more than
	// maxKept entries per key, which bounds the state of a noisy key.
	window := int64(r.Window)
	horizon := st.Times[len(st.Times)-1] - window - int64(lateness)
	drop := sort.Search(len(st.Times), func(i int) bool { return st.Times[i] >= horizon })
	if maxKept := max(4*r.Threshold, 64); len(st.Times)-drop > maxKept {
		drop = len(st.Times) - maxKept
	}
	st.Times, st.IDs = st.Times[drop:], st.IDs[drop:]

	// The first span of Threshold consecutive events no longer than the
	// window is the window that fired; it takes in every event up to its
	// start plus the window.
	n := r.Threshold
	for lo := 0; lo+n-1 < len(st.Times); lo++ {
		if st.Times[lo+n-1]-st.Times[lo] > window {
			continue
		}
		hi := lo + n - 1
		for hi+1 < len(st.Times) && st.Times[hi+1]-st.Times[lo] <= window {
			hi++
		}
		first, last := st.Times[lo], st.Times[hi]
		evidence := append([]string(nil), st.IDs[lo:min(hi+1, lo+maxEvidence)]...)
		// The events of this window are spent either way: the next alert
		// needs Threshold new ones.
		st.Times, st.IDs = st.Times[hi+1:], st.IDs[hi+1:]
		st.Spent = last
		if r.Suppress > 0 && st.LastAlert != 0 && absDur(first-st.LastAlert) < r.Suppress {
			return nil, Suppressed
		}
		st.LastAlert = last
		a := newAlert(r, m, alertID(r.ID, m.Key, first, ""))
		a.Count = hi - lo + 1
		a.FirstSeen, a.LastSeen = time.Unix(0, first).UTC(), time.Unix(0, last).UTC()
		a.EventIDs = evidence
		return a, Fired
	}
	return nil, Counted
}

func newAlert(r *rules.Rule, m *event.Match, id string) *event.Alert {
	return &event.Alert{
		ID:          id,
		RuleID:      r.ID,
		Title:       r.Title,
		Description: r.Description,
		Severity:    r.Severity,
		Tags:        r.Tags,
		Kind:        string(r.Kind),
		GroupBy:     r.GroupBy,
		Key:         m.Key,
		Fields:      m.Fields,
	}
}

// alertID is deterministic in (rule, group key, window start[, event]): 128
// bits of SHA-256 in hex, 32 characters, within CEF externalId's 40.
func alertID(rule, key string, windowStart int64, eventID string) string {
	h := sha256.New()
	h.Write([]byte(rule))
	h.Write([]byte{0})
	h.Write([]byte(key))
	h.Write([]byte{0})
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(windowStart))
	h.Write(b[:])
	h.Write([]byte(eventID))
	sum := h.Sum(nil)
	return hex.EncodeToString(sum[:16])
}

func absDur(ns int64) time.Duration {
	if ns < 0 {
		ns = -ns
	}
	return time.Duration(ns)
}

package engine

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

// maxEvidence caps the event ids an alert carries; maxSeen the values a
// new_value key remembers; maxSpentIDs the ids spent at one second.
const (
	maxEvidence = 100
	maxSeen     = 1000
	// maxSpentIDs caps the ids a state remembers as spent at one second.
	maxSpentIDs = 256
)

// State is the durable state of one (rule, group key).
//
// Times, IDs and (per kind) Steps and Values are parallel and sorted by
// event time: the events still in play. LastAlert is the event time of the
// last event of the last alert, for suppression. Spent is the event time up
// to which events were used by an alert (suppressed or not); events at or
// before it are not counted again, which makes a redelivered batch
// idempotent even after its events left the lists, and keeps a late event
// from re-opening a window that fired.
type State struct {
	Times     []int64  `json:"t,omitempty"` // unix nanoseconds
	IDs       []string `json:"i,omitempty"`
	Steps     []uint8  `json:"p,omitempty"` // sequence: step of each event (rules.MaxSteps)
	Values    []string `json:"v,omitempty"` // distinct: value of each event
	LastAlert int64    `json:"a,omitempty"`
	Spent     int64    `json:"s,omitempty"`
	// SpentIDs are the ids of the events spent at exactly Spent: an event
	// at that time is a duplicate only if it is one of them (timestamps of
	// one-second resolution make ties common).
	SpentIDs []string `json:"si,omitempty"`

	// new_value: the earliest event time of the key, and the values seen.
	First int64    `json:"f,omitempty"`
	Seen  []string `json:"n,omitempty"`

	// absence: armed while Deadline != 0; Since and SinceID name the event
	// the silence is counted from, SinceFields the fields its match carried,
	// which the alert reports (it is raised without a match of its own).
	Deadline    int64             `json:"d,omitempty"`
	Since       int64             `json:"w,omitempty"`
	SinceID     string            `json:"x,omitempty"`
	SinceFields map[string]string `json:"xf,omitempty"`
}

// Clone returns a deep copy.
func (st *State) Clone() *State {
	c := *st
	c.Times = slices.Clone(st.Times)
	c.IDs = slices.Clone(st.IDs)
	c.Steps = slices.Clone(st.Steps)
	c.Values = slices.Clone(st.Values)
	c.SpentIDs = slices.Clone(st.SpentIDs)
	c.Seen = slices.Clone(st.Seen)
	c.SinceFields = maps.Clone(st.SinceFields)
	return &c
}

// Empty reports whether the state holds nothing worth keeping.
func (st *State) Empty() bool {
	return len(st.Times) == 0 && st.LastAlert == 0 && st.Spent == 0 && st.First == 0 && st.Deadline == 0 && st.Since == 0
}

// Verdict says what Apply did with a match.
type Verdict int

// Verdicts, for metrics.
const (
	Counted    Verdict = iota // added to the state, no alert yet
	Fired                     // an alert was produced
	Suppressed                // the condition held but an alert was sent for this key within suppress
	Duplicate                 // the event was already counted (a redelivery) or is spent
)

// FromState reports whether r's alerts are raised from its state when a
// deadline passes (absence, and a rule with an upper bound, AtMost),
// rather than by the match that completes them: they carry the fields of
// the event the state kept (State.SinceFields).
func FromState(r *rules.Rule) bool {
	return r.Kind == rules.KindAbsence || r.AtMost > 0 && (r.Kind == rules.KindThreshold || r.Kind == rules.KindDistinct)
}

// Stateless reports whether r needs no state at all: a match rule without
// suppression.
func Stateless(r *rules.Rule) bool { return r.Kind == rules.KindMatch && r.Suppress == 0 }

// Apply adds match m of rule r to st and returns the alert it causes, if
// any. It is deterministic: the same matches in the same order give the same
// alerts with the same ids, which is what makes redelivery safe.
//
// lateness extends how long an event stays in the state beyond its window,
// so an event arriving out of order can still complete a window.
//
// A match is placed at m.At(): its time, capped at its reception. Every
// comparison — window spans, eviction, spent events, suppression, learning,
// absence deadlines — and the alert's times use that, so one event stamped
// far ahead can neither evict its key's events, spend them, nor move a
// silence or a deadline past every reception.
func Apply(r *rules.Rule, st *State, m *event.Match, lateness time.Duration) (*event.Alert, Verdict) {
	at := m.At()
	t := at.UnixNano()
	switch r.Kind {
	case rules.KindMatch:
		if suppressed(r, st, t) {
			return nil, Suppressed
		}
		st.LastAlert = t
		a := newAlert(r, m, alertID(r.ID, m.Key, t, m.EventID))
		a.Count, a.FirstSeen, a.LastSeen, a.EventIDs = 1, at, at, []string{m.EventID}
		return a, Fired
	case rules.KindNewValue:
		return applyNewValue(r, st, m, t)
	case rules.KindAbsence:
		if a := applyAbsence(r, st, m, t); a != nil {
			return a, Fired
		}
		return nil, Counted
	}
	if !st.fits(r) {
		// Damage DecodeState cannot see (it does not know the rule, and a
		// threshold's state has no steps): the key starts over, as for
		// any unreadable state, rather than panic below.
		*st = State{}
	}
	if FromState(r) {
		return applyClosing(r, st, m, t, lateness)
	}
	// An event newer than every event held cannot be one of them: has,
	// a scan of the ids, is only needed for one that is not.
	if st.spent(t, m.EventID) || (len(st.Times) > 0 && t <= st.Times[len(st.Times)-1] && st.has(m.EventID, m.Step)) {
		return nil, Duplicate
	}
	st.insert(r, t, m)
	st.evict(r, lateness)
	if r.Kind == rules.KindSequence && forgetIDs {
		st.forgetOldIDs(r, m.EventID)
	}
	var lo, hi int
	var picked []int
	var ok bool
	switch r.Kind {
	case rules.KindThreshold:
		lo, hi, ok = st.thresholdSpan(r)
	case rules.KindDistinct:
		lo, hi, ok = st.distinctSpan(r)
	case rules.KindSequence:
		if r.Unordered {
			picked, ok = st.unorderedChain(r)
		} else {
			picked, ok = st.orderedChain(r, t)
		}
	}
	if !ok {
		return nil, Counted
	}
	if picked == nil {
		for i := lo; i <= hi; i++ {
			picked = append(picked, i)
		}
	}
	sort.Ints(picked)
	first, last := st.Times[picked[0]], st.Times[picked[len(picked)-1]]
	// A suppressed window makes no alert (its id is a hash): only the
	// bookkeeping below.
	var a *event.Alert
	if !suppressed(r, st, first) {
		// With timestamps of one-second resolution, two windows of a key
		// can begin at the same time: one that begins where an earlier
		// one's spent events are takes its first event's id too. Any other
		// id stays (rule, key, window start): the same however the events
		// were numbered (live, replay, a rule test).
		extra := ""
		if first == st.Spent {
			extra = st.IDs[picked[0]]
		}
		a = newAlert(r, m, alertID(r.ID, m.Key, first, extra))
		a.Count = len(picked)
		a.FirstSeen, a.LastSeen = time.Unix(0, first).UTC(), time.Unix(0, last).UTC()
		for _, i := range picked[:min(len(picked), maxEvidence)] {
			if st.IDs[i] != "" { // not forgotten (forgetOldIDs)
				a.EventIDs = append(a.EventIDs, st.IDs[i])
			}
			if r.Kind == rules.KindSequence {
				a.Steps = append(a.Steps, event.StepHit{Name: r.Steps[st.Steps[i]].Name, Time: time.Unix(0, st.Times[i]).UTC(), EventID: st.IDs[i]})
			}
		}
		if r.Kind == rules.KindDistinct {
			a.Values = st.distinctValues(lo, hi)
			a.Count = len(a.Values)
		}
	}
	// The events up to the last one used are spent either way: the next
	// alert needs new ones. An alert ending at the second an earlier one
	// ended at adds its ids to that one's: the events the earlier alert
	// spent at that second are no longer held, and a redelivery of one of
	// them must still be recognised as spent.
	if last != st.Spent {
		st.SpentIDs = st.SpentIDs[:0]
	}
	for i, tt := range st.Times {
		if tt == last && st.IDs[i] != "" {
			st.SpentIDs = append(st.SpentIDs, st.IDs[i])
		}
	}
	if n := len(st.SpentIDs); n > maxSpentIDs {
		// A flood stamped with one second (a sender picks its
		// timestamps) must not grow the state without bound: the oldest
		// go, and only their redelivery after a crash could count again.
		st.SpentIDs = append(st.SpentIDs[:0], st.SpentIDs[n-maxSpentIDs:]...)
	}
	st.dropThrough(last)
	st.Spent = last
	if a == nil {
		return nil, Suppressed
	}
	st.LastAlert = last
	return a, Fired
}

func suppressed(r *rules.Rule, st *State, t int64) bool {
	return r.Suppress > 0 && st.LastAlert != 0 && absDur(t-st.LastAlert) < r.Suppress
}

// fits reports whether the event lists are those of r's kind: Steps (a
// sequence) and Values (distinct) parallel to Times, and none for another
// kind. DecodeState's parallel checks what it can without the rule.
func (st *State) fits(r *rules.Rule) bool {
	n, steps, values := len(st.Times), 0, 0
	switch r.Kind {
	case rules.KindSequence:
		steps = n
	case rules.KindDistinct:
		values = n
	}
	return len(st.IDs) == n && len(st.Steps) == steps && len(st.Values) == values
}

// spent reports whether an event at t with id was used by an alert already.
func (st *State) spent(t int64, id string) bool {
	return st.Spent != 0 && (t < st.Spent || (t == st.Spent && slices.Contains(st.SpentIDs, id)))
}

func (st *State) has(id string, step int) bool {
	for i, v := range st.IDs {
		if v == id && v != "" && (st.Steps == nil || int(st.Steps[i]) == step) {
			return true
		}
	}
	return false
}

// insert adds the match in event-time order. For distinct, a key keeps one
// entry per value, its latest: repeats of a value (a port seen a thousand
// times) must not push the other values out of the bounded state.
func (st *State) insert(r *rules.Rule, t int64, m *event.Match) {
	if r.Kind == rules.KindDistinct {
		if j := slices.Index(st.Values, m.Value); j >= 0 {
			if st.Times[j] >= t {
				return
			}
			st.Times = slices.Delete(st.Times, j, j+1)
			st.IDs = slices.Delete(st.IDs, j, j+1)
			st.Values = slices.Delete(st.Values, j, j+1)
		}
	}
	st.insertSorted(r, t, m)
}

// insertSorted adds the match in event-time order.
func (st *State) insertSorted(r *rules.Rule, t int64, m *event.Match) {
	i := sort.Search(len(st.Times), func(i int) bool { return st.Times[i] > t })
	st.Times = insertAt(st.Times, i, t)
	st.IDs = insertAt(st.IDs, i, m.EventID)
	if r.Kind == rules.KindSequence {
		st.Steps = insertAt(st.Steps, i, uint8(m.Step))
	}
	if r.Kind == rules.KindDistinct {
		st.Values = insertAt(st.Values, i, m.Value)
	}
}

// insertAt is slices.Insert of one value, growing a full slice by a
// quarter rather than doubling it: a state is appended to at the end and
// sliced at the front (evict), so a doubled list sat half empty, and a
// key's lists live as long as the key does.
func insertAt[T any](s []T, i int, v T) []T {
	if len(s) < cap(s) {
		return slices.Insert(s, i, v)
	}
	n := make([]T, len(s)+1, len(s)+len(s)/4+4)
	copy(n, s[:i])
	n[i] = v
	copy(n[i+1:], s[i:])
	return n
}

// keptIDs is how many of a sequence step's newest events keep their ids,
// in multiples of the step's count.
const keptIDs = 2

// forgetIDs is false only in the test that compares alerts with and
// without forgetOldIDs.
var forgetIDs = true

// forgetOldIDs forgets the ids of a sequence's events beyond the newest
// keptIDs × count of their step (their times and steps stay, and still
// count). A chain picks each step's latest events before the next step's:
// in order, those are the newest. The rest wait, for the window and the
// lateness, in case a step arrives out of order; a key that fails and
// fails (a brute force that never succeeds) kept up to 80 ids it would
// likely never name, which made its state, encoded at every checkpoint
// and held in the state log's index, about three times bigger. What it
// costs: an alert whose chain picked such an event names fewer events
// than it counts, and a copy of such an event arriving again (not a
// redelivery, which the stage's positions skip, but the same record read
// twice) is not recognised as one.
//
// The event being applied (id) keeps its id, however old: an event that
// satisfies several steps is a match per step with its id, applied one
// after the other, and an alert that one of them completes, ending at the
// event's second, must remember it as spent (SpentIDs), or its next match
// is counted where keeping every id makes it Duplicate.
func (st *State) forgetOldIDs(r *rules.Rule, id string) {
	var buf [8]int // events seen of each step, newest first
	seen := scratch(buf[:], len(r.Steps))
	for i := len(st.IDs) - 1; i >= 0; i-- {
		k := int(st.Steps[i])
		if k < 0 || k >= len(seen) {
			continue
		}
		// One at Spent keeps its id: a window beginning there takes it
		// into its alert's id (Apply). One forgotten already is left
		// alone: most are, and rewriting each (a pointer, behind the
		// collector's write barrier) at every match cost more than the
		// test.
		if seen[k]++; st.IDs[i] != "" && seen[k] > keptIDs*max(r.Steps[k].Count, 1) && st.Times[i] != st.Spent && st.IDs[i] != id {
			st.IDs[i] = ""
		}
	}
}

// evict forgets what no future window can use: events older than the
// newest minus the window and the allowed lateness; and beyond maxKept
// events per key, which bounds the state of a noisy key, the oldest (for
// a sequence, the oldest no chain needs: trimSteps).
func (st *State) evict(r *rules.Rule, lateness time.Duration) {
	horizon := st.Times[len(st.Times)-1] - int64(r.Window) - int64(lateness)
	drop := sort.Search(len(st.Times), func(i int) bool { return st.Times[i] >= horizon })
	need := r.Threshold
	for _, s := range r.Steps {
		need = max(need, s.Count*len(r.Steps))
	}
	maxKept := max(4*need, 64)
	if r.Kind == rules.KindSequence {
		st.dropFirst(drop)
		if len(st.Times) > maxKept {
			// An eighth below the bound: trimSteps looks at every event,
			// and a full state is not trimmed again for that many matches.
			st.trimSteps(r, maxKept-maxKept/8, 2*maxKept)
		}
		return
	}
	if len(st.Times)-drop > maxKept {
		drop = len(st.Times) - maxKept
	}
	st.dropFirst(drop)
}

// minKeptPerStep is the fewest of a step's newest events trimSteps keeps.
const minKeptPerStep = 8

// trimSteps brings a sequence's events down to to, the oldest first, but
// keeps those a chain can still pick: of every step, its newest
// 4 × count (at least minKeptPerStep), which chains ending at events still
// to come pick; and, for an ordered sequence, before each event kept of a
// step, the latest count events of the step before it, which a chain
// through that event picks. A flood of one step's events (a flagged
// address's RDP connections, which a brute force makes by the hundred)
// then cannot push out another step's event a chain needs (the flag),
// which dropping the oldest whatever their step did: an attacker evaded
// rdp-from-malicious-ip by connecting 64 times. The events kept that way
// may exceed to, up to most; past that the oldest of them go too, down to
// an eighth below most (a long rule's steps interleaved against their
// order can keep that many).
func (st *State) trimSteps(r *rules.Rule, to, most int) {
	n := len(st.Times)
	var keepBuf [256]bool
	var leftBuf [8]int
	keep, left := scratch(keepBuf[:], n), scratch(leftBuf[:], len(r.Steps))
	for k, s := range r.Steps {
		left[k] = max(4*s.Count, minKeptPerStep)
	}
	unkept, chained := 0, false
	for i := n - 1; i >= 0; i-- {
		k := int(st.Steps[i])
		switch {
		case k >= len(left): // not a step of this rule (a damaged state): goes first
			unkept++
		case left[k] > 0:
			left[k]--
			keep[i] = true
			chained = chained || k > 0
		default:
			unkept++
		}
	}
	if chained && !r.Unordered {
		unkept -= st.keepChains(r, keep)
	}
	// The oldest unkept events go while more than to are held; kept ones,
	// the oldest first, only when more than most are, and then an eighth
	// below it (as evict trims below the bound).
	dropUnkept := max(min(unkept, n-to), 0)
	dropKept := 0
	if n-dropUnkept > most {
		dropKept = n - dropUnkept - (most - most/8)
	}
	// Most often what goes is the oldest events, in a row: dropped from
	// the front, nothing is moved.
	front := 0
	for du, dk := dropUnkept, dropKept; front < n && (!keep[front] && du > 0 || keep[front] && dk > 0); front++ {
		if keep[front] {
			dk--
		} else {
			du--
		}
	}
	if front == dropUnkept+dropKept {
		st.dropFirst(front)
		return
	}
	j := 0
	for i := range n {
		if !keep[i] && dropUnkept > 0 {
			dropUnkept--
			continue
		}
		if keep[i] && dropKept > 0 {
			dropKept--
			continue
		}
		st.Times[j], st.IDs[j], st.Steps[j] = st.Times[i], st.IDs[i], st.Steps[i]
		j++
	}
	clear(st.IDs[j:])
	st.Times, st.IDs, st.Steps = st.Times[:j], st.IDs[:j], st.Steps[:j]
}

// keepChains marks, for each event keep holds of an ordered sequence's
// step, the latest count events of the step before at or before it,
// from the last step back (what a step keeps for the next one is known
// before the step before it is looked at), and returns how many it
// marked that were not kept before. One pass
// over the events groups them by step (by[off[k]:off[k+1]] are step k's,
// in time order); then, for each step, its kept events newest first: q
// is how many of the step before are at or before the event, the count
// before q are kept, and low is where what is kept of them begins (the
// spans only move back). A flood of a ten-step rule costs a few
// microseconds a match this way (BenchmarkTrimStepsFlood).
func (st *State) keepChains(r *rules.Rule, keep []bool) (marked int) {
	n, steps := len(st.Times), len(r.Steps)
	var byBuf [256]int32
	var offBuf [9]int
	by, off := scratch(byBuf[:], n), scratch(offBuf[:], steps+1)
	for _, k := range st.Steps {
		if int(k) < steps {
			off[k+1]++
		}
	}
	for k := range steps {
		off[k+1] += off[k]
	}
	var nextBuf [8]int // where each step's next event goes
	next := append(nextBuf[:0], off[:steps]...)
	for i, k := range st.Steps {
		if int(k) < steps {
			by[next[k]] = int32(i)
			next[k]++
		}
	}
	for k := steps - 2; k >= 0; k-- {
		before, after := by[off[k]:off[k+1]], by[off[k+1]:off[k+2]]
		count := max(r.Steps[k].Count, 1)
		q, low := len(before), len(before)
		for a := len(after) - 1; a >= 0 && q > 0; a-- {
			j := after[a]
			if !keep[j] {
				continue
			}
			for q > 0 && st.Times[before[q-1]] > st.Times[j] {
				q--
			}
			from := max(q-count, 0)
			for _, i := range before[from:min(q, low)] {
				if !keep[i] {
					keep[i] = true
					marked++
				}
			}
			low = min(low, from)
		}
	}
	return marked
}

// scratch is buf[:n] (zeroed by its caller's declaration: a small array
// on the stack) when n fits, or a new slice of n.
func scratch[T any](buf []T, n int) []T {
	if n <= len(buf) {
		return buf[:n]
	}
	return make([]T, n)
}

func (st *State) dropFirst(n int) {
	st.Times, st.IDs = st.Times[n:], st.IDs[n:]
	if st.Steps != nil {
		st.Steps = st.Steps[n:]
	}
	if st.Values != nil {
		st.Values = st.Values[n:]
	}
}

// dropThrough drops every event at or before t.
func (st *State) dropThrough(t int64) {
	st.dropFirst(sort.Search(len(st.Times), func(i int) bool { return st.Times[i] > t }))
}

// thresholdSpan finds the first run of Threshold events no longer than the
// window; it takes in every event up to its start plus the window.
func (st *State) thresholdSpan(r *rules.Rule) (lo, hi int, ok bool) {
	w, n := int64(r.Window), r.Threshold
	for lo = 0; lo+n-1 < len(st.Times); lo++ {
		if st.Times[lo+n-1]-st.Times[lo] > w {
			continue
		}
		hi = lo + n - 1
		for hi+1 < len(st.Times) && st.Times[hi+1]-st.Times[lo] <= w {
			hi++
		}
		return lo, hi, true
	}
	return 0, 0, false
}

// distinctSpan finds the first window (at most the window long) holding
// Threshold distinct values, sliding over the events once.
func (st *State) distinctSpan(r *rules.Rule) (lo, hi int, ok bool) {
	w := int64(r.Window)
	counts := distinctCounts.Get().(map[string]int)
	defer func() {
		clear(counts)
		distinctCounts.Put(counts)
	}()
	for hi = range st.Times {
		counts[st.Values[hi]]++
		for st.Times[hi]-st.Times[lo] > w {
			if counts[st.Values[lo]]--; counts[st.Values[lo]] == 0 {
				delete(counts, st.Values[lo])
			}
			lo++
		}
		if len(counts) >= r.Threshold {
			return lo, hi, true
		}
	}
	return 0, 0, false
}

// distinctCounts recycles distinctSpan's counts: a map made for every
// match of a distinct rule was 7% of the bytes the pipeline allocated.
var distinctCounts = sync.Pool{New: func() any { return make(map[string]int) }}

func (st *State) distinctValues(lo, hi int) []string {
	var out []string
	for i := lo; i <= hi; i++ {
		if !slices.Contains(out, st.Values[i]) {
			out = append(out, st.Values[i])
		}
	}
	return out[:min(len(out), maxEvidence)]
}

// orderedChain finds steps in order within the window. Only chains that
// can include the event just inserted at time t are new, so it tries the
// last-step events from t to t plus the window, earliest first; for each it
// walks back picking for every step the latest Count events at or before
// the step after it: the latest choices give the shortest chain, so if they
// do not fit the window none do.
func (st *State) orderedChain(r *rules.Rule, t int64) ([]int, bool) {
	last := len(r.Steps) - 1
	w := int64(r.Window)
	from := sort.Search(len(st.Times), func(i int) bool { return st.Times[i] >= t })
	var picked []int
	for end := from; end < len(st.Times) && st.Times[end]-t <= w; end++ {
		if int(st.Steps[end]) != last {
			continue
		}
		picked = append(picked[:0], end)
		cur := st.Times[end]
		ok := true
		for step := last; step >= 0 && ok; step-- {
			need := r.Steps[step].Count
			if step == last {
				need--
			}
			earliest := cur
			for i := len(st.Times) - 1; i >= 0 && need > 0; i-- {
				if int(st.Steps[i]) == step && st.Times[i] <= cur && i != end && (step != last || !slices.Contains(picked, i)) {
					picked = append(picked, i)
					earliest = st.Times[i]
					need--
				}
			}
			ok = need == 0
			cur = earliest
		}
		if ok && st.Times[end]-cur <= w {
			return picked, true
		}
	}
	return nil, false
}

// unorderedChain finds every step's Count events within one window,
// starting the window at each event in turn.
func (st *State) unorderedChain(r *rules.Rule) ([]int, bool) {
	w := int64(r.Window)
	for start := range st.Times {
		var picked []int
		ok := true
		for step := range r.Steps {
			need := r.Steps[step].Count
			for i := start; i < len(st.Times) && st.Times[i]-st.Times[start] <= w && need > 0; i++ {
				if int(st.Steps[i]) == step {
					picked = append(picked, i)
					need--
				}
			}
			if need > 0 {
				ok = false
				break
			}
		}
		if ok && slices.Contains(picked, start) {
			return picked, true
		}
	}
	return nil, false
}

func applyNewValue(r *rules.Rule, st *State, m *event.Match, t int64) (*event.Alert, Verdict) {
	if st.First == 0 || t < st.First {
		st.First = t
	}
	if slices.Contains(st.Seen, m.Value) {
		return nil, Duplicate
	}
	st.Seen = append(st.Seen, m.Value)
	if len(st.Seen) > maxSeen {
		st.Seen = st.Seen[len(st.Seen)-maxSeen:]
	}
	if t-st.First < int64(r.Learning) {
		return nil, Counted // still learning what is normal for this key
	}
	if suppressed(r, st, t) {
		return nil, Suppressed
	}
	st.LastAlert = t
	a := newAlert(r, m, alertID(r.ID, m.Key, 0, m.Value))
	a.Count, a.FirstSeen, a.LastSeen = 1, m.At(), m.At()
	a.EventIDs, a.Values = []string{m.EventID}, []string{m.Value}
	return a, Fired
}

// applyAbsence arms, re-arms or disarms the key's deadline. Without
// `expect`, every event of the key moves the deadline to its time plus
// `for` (a source gone silent). With `expect`, the trigger (step 0) arms it
// once and an expected event (step 1) within `for` after it disarms it.
//
// Either way, an event of the key that comes after the deadline proves
// the deadline passed unmet (a backlog read at once holds the gap and the
// event after it), so that alert is reported first, with the id Expire
// gives it. So whether a driver's deadline check ran before this match or
// not, the key ends in the same state having raised the same alerts.
func applyAbsence(r *rules.Rule, st *State, m *event.Match, t int64) *event.Alert {
	var a *event.Alert
	if st.Deadline != 0 && t > st.Deadline {
		a, _ = Expire(r, st, m.Key, t)
	}
	expect := len(r.Steps) > 1
	switch {
	case !expect:
		if t > st.Since || st.Deadline == 0 {
			if t > st.Since {
				st.Since, st.SinceID, st.SinceFields = t, m.EventID, m.CarriedFields()
			}
			st.Deadline = st.Since + int64(r.For)
		}
	case m.Step == 0:
		if st.Deadline == 0 {
			st.Since, st.SinceID, st.Deadline = t, m.EventID, t+int64(r.For)
			st.SinceFields = m.CarriedFields()
		}
	default:
		if st.Deadline != 0 && t >= st.Since && t <= st.Deadline {
			st.Deadline = 0
		}
	}
	return a
}

// applyClosing counts a match of a threshold or distinct rule with an
// upper bound (r.AtMost: "at most N events, or values, in the window"),
// which can only be judged once its window has closed. A key's window
// opens at its first event not yet judged (Since) and closes Window later
// (Deadline); Expire judges it when the watermark passes the deadline, so
// an event of the window arriving late, within the allowed lateness, still
// counts. An event of the key later than the deadline by more than the
// lateness proves the window closed: it is judged then. Events after the
// deadline wait in the state for the next window, which they open when
// this one is judged. An event earlier than Since (out of order) counts in
// the open window. Each window keeps at most AtMost+1 events (for
// distinct, values): one more than can fire tells it is over its bound, so
// a flood of events cannot grow the state.
func applyClosing(r *rules.Rule, st *State, m *event.Match, t int64, lateness time.Duration) (*event.Alert, Verdict) {
	var a *event.Alert
	v := Counted
	if st.Deadline != 0 && t > st.Deadline+int64(lateness) {
		a, v = Expire(r, st, m.Key, t)
	}
	if st.spent(t, m.EventID) || st.has(m.EventID, m.Step) {
		if a == nil {
			return nil, Duplicate
		}
		return a, v
	}
	if st.Deadline == 0 {
		st.Since, st.SinceID, st.SinceFields = t, m.EventID, m.CarriedFields()
		st.Deadline = t + int64(r.Window)
	}
	// This window's events, or the next one's.
	split := sort.Search(len(st.Times), func(i int) bool { return st.Times[i] > st.Deadline })
	lo, hi := 0, split
	if t > st.Deadline {
		lo, hi = split, len(st.Times)
	}
	if r.Kind == rules.KindDistinct {
		// One entry per value and window, its latest.
		if j := slices.Index(st.Values[lo:hi], m.Value); j >= 0 {
			if st.Times[lo+j] >= t {
				return a, v
			}
			st.deleteAt(lo + j)
			hi--
		}
	}
	if hi-lo <= r.AtMost {
		st.insertSorted(r, t, m)
	}
	if a == nil && v == Counted {
		return nil, Counted
	}
	return a, v
}

// deleteAt removes the i-th event.
func (st *State) deleteAt(i int) {
	st.Times = slices.Delete(st.Times, i, i+1)
	st.IDs = slices.Delete(st.IDs, i, i+1)
	if st.Steps != nil {
		st.Steps = slices.Delete(st.Steps, i, i+1)
	}
	if st.Values != nil {
		st.Values = slices.Delete(st.Values, i, i+1)
	}
}

// expireClosing judges the closed window of a rule with an upper bound:
// it fires if the window held from Threshold to AtMost events (for
// distinct, values). What the window held is spent; the events after its
// deadline open the next window.
func expireClosing(r *rules.Rule, st *State, key string) (*event.Alert, Verdict) {
	since, deadline := st.Since, st.Deadline
	split := sort.Search(len(st.Times), func(i int) bool { return st.Times[i] > deadline })
	n := split
	ids, fields, sinceID := st.IDs[:split], st.SinceFields, st.SinceID
	var values []string
	if st.Values != nil {
		values = st.Values[:split]
	}
	first, last := since, since
	if n > 0 {
		first, last = min(since, st.Times[0]), max(since, st.Times[n-1])
	}
	next := State{LastAlert: st.LastAlert, Spent: deadline + 1}
	if split < len(st.Times) {
		next.Times = slices.Clone(st.Times[split:])
		next.IDs = slices.Clone(st.IDs[split:])
		if st.Values != nil {
			next.Values = slices.Clone(st.Values[split:])
		}
		next.Since, next.SinceID = next.Times[0], next.IDs[0]
		next.Deadline = next.Since + int64(r.Window)
		// Its first event's fields were not kept: its alert carries the key.
	}
	*st = next
	if n < r.Threshold || n > r.AtMost {
		return nil, Counted
	}
	if suppressed(r, st, since) {
		return nil, Suppressed
	}
	st.LastAlert = since
	a := newAlert(r, &event.Match{Key: key, Fields: fields}, alertID(r.ID, key, since, sinceID))
	a.Count = n
	a.FirstSeen, a.LastSeen = time.Unix(0, first).UTC(), time.Unix(0, last).UTC()
	a.EventIDs = slices.Clone(ids[:min(n, maxEvidence)])
	if r.Kind == rules.KindDistinct {
		a.Values = slices.Clone(values[:min(n, maxEvidence)])
	}
	return a, Fired
}

// Expire fires an absence rule's alert when the watermark has passed the
// key's deadline, and judges the closed window of a rule with an upper
// bound (AtMost); it never fires early. The key is disarmed either way.
func Expire(r *rules.Rule, st *State, key string, watermark int64) (*event.Alert, Verdict) {
	if st.Deadline == 0 || watermark <= st.Deadline {
		return nil, Counted
	}
	if FromState(r) && r.Kind != rules.KindAbsence {
		return expireClosing(r, st, key)
	}
	if r.Kind != rules.KindAbsence {
		return nil, Counted
	}
	since := st.Since
	st.Deadline = 0
	if suppressed(r, st, since) {
		return nil, Suppressed
	}
	st.LastAlert = since
	a := newAlert(r, &event.Match{Key: key, Fields: st.SinceFields}, alertID(r.ID, key, since, st.SinceID))
	a.FirstSeen = time.Unix(0, since).UTC()
	a.LastSeen = a.FirstSeen
	a.EventIDs = []string{st.SinceID}
	return a, Fired
}

func newAlert(r *rules.Rule, m *event.Match, id string) *event.Alert {
	fields, cefMap := r.AlertFields(m.CarriedFields())
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
		Fields:      fields,
		CEF:         cefMap,
	}
}

// alertID is deterministic in (rule, group key, window start, event or
// value: the matching event, the new value, or the first event of a window
// that begins in the second an earlier one ended): 128 bits of SHA-256 in hex, 32 characters, within CEF
// externalId's 40.
func alertID(rule, key string, windowStart int64, extra string) string {
	h := sha256.New()
	h.Write([]byte(rule))
	h.Write([]byte{0})
	h.Write([]byte(key))
	h.Write([]byte{0})
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(windowStart))
	h.Write(b[:])
	h.Write([]byte(extra))
	sum := h.Sum(nil)
	return hex.EncodeToString(sum[:16])
}

func absDur(ns int64) time.Duration {
	if ns < 0 {
		ns = -ns
	}
	return time.Duration(ns)
}

package engine

import (
	"container/heap"
	"hash/maphash"

	"github.com/outpost-siem/outpost/rules"
)

// MemStore keeps window states in memory, for `rules test` and `rules
// replay`: no durability, no TTL, no key cap. It is its own Txn: a change
// is in effect at once. Absence deadlines are in a heap, one entry per
// armed key: a deadline that moves later is queued again when its old time
// comes. Not safe for concurrent use.
type MemStore struct {
	seed    maphash.Seed
	collide bool                                 // tests: every key hashes alike
	rules   map[*rules.Rule]map[uint64]*memState // by the hash of the group key
	// last and lastStates are the rule looked up last and its states: a
	// run of matches of one rule skips the lookup by rule.
	last       *rules.Rule
	lastStates map[uint64]*memState
	// hinted, hintKey and hintHash: the next State of hintKey may use
	// hintHash (Hint).
	hinted   bool
	hintKey  string
	hintHash uint64
	timers   memTimers
}

// NewMemStore returns an empty store.
func NewMemStore() *MemStore { return NewMemStoreSeeded(maphash.MakeSeed()) }

// NewMemStoreSeeded returns an empty store that hashes group keys with
// seed (hash/maphash), so a driver that hashed a key with the same seed
// can Hint it.
func NewMemStoreSeeded(seed maphash.Seed) *MemStore {
	return &MemStore{seed: seed, rules: map[*rules.Rule]map[uint64]*memState{}}
}

// Hint tells the store that key hashes to h with its seed: the next State
// of key takes h instead of hashing it again. `rules replay` hashes every
// key once to pick the shard that owns it.
func (s *MemStore) Hint(key string, h uint64) { s.hinted, s.hintKey, s.hintHash = true, key, h }

// memState is the state of one (rule, group key) with the key's bytes
// beside it. Found by the key's hash and checked against the key, a state
// costs one cache miss fewer than in a map by string: the key the map
// would compare lives elsewhere in the heap. With 100,000 keys that was a
// sixth of replay's window time.
type memState struct {
	State
	next   *memState // another key with the same hash
	keyLen int
	inline [memInlineKey]byte // the key, when it fits
	long   string             // the key, when it does not
}

const memInlineKey = 48 // "src_ip=" and an IPv6 address fit

func (e *memState) is(key string) bool {
	if len(key) != e.keyLen {
		return false
	}
	if len(key) <= memInlineKey {
		return string(e.inline[:len(key)]) == key
	}
	return e.long == key
}

// State returns the state of (r, key), created empty if new.
func (s *MemStore) State(r *rules.Rule, key string, _ bool) (*State, error) {
	m := s.lastStates
	if r != s.last {
		if m = s.rules[r]; m == nil {
			m = map[uint64]*memState{}
			s.rules[r] = m
		}
		s.last, s.lastStates = r, m
	}
	var h uint64
	switch {
	case s.collide:
	case s.hinted && key == s.hintKey:
		h = s.hintHash
	default:
		h = maphash.String(s.seed, key)
	}
	s.hinted = false
	first := m[h]
	for e := first; e != nil; e = e.next {
		if e.is(key) {
			return &e.State, nil
		}
	}
	e := &memState{next: first, keyLen: len(key)}
	if len(key) <= memInlineKey {
		copy(e.inline[:], key)
	} else {
		e.long = key
	}
	m[h] = e
	return &e.State, nil
}

// Keys is the number of (rule, group key) states held.
func (s *MemStore) Keys() int {
	n := 0
	for _, m := range s.rules {
		for _, e := range m {
			for ; e != nil; e = e.next {
				n++
			}
		}
	}
	return n
}

// Armed queues a newly armed deadline (or one that moved earlier); one
// that moved later is queued again when its old time comes (Due).
func (s *MemStore) Armed(r *rules.Rule, key string, st *State, was int64) {
	if was == 0 || st.Deadline < was {
		heap.Push(&s.timers, memTimer{at: st.Deadline, rule: r, key: key, st: st})
	}
}

// Due pops the deadlines before watermark that their states still hold.
func (s *MemStore) Due(watermark int64, limit int) ([]Deadline, error) {
	var out []Deadline
	for len(s.timers) > 0 && s.timers[0].at < watermark && (limit < 1 || len(out) < limit) {
		t := heap.Pop(&s.timers).(memTimer)
		switch d := t.st.Deadline; {
		case d == 0 || d < t.at:
			continue // disarmed, or queued again earlier
		case d > t.at:
			t.at = d
			heap.Push(&s.timers, t)
			continue
		}
		out = append(out, Deadline{At: t.at, Rule: t.rule.ID, Fingerprint: t.rule.Fingerprint, Key: t.key})
	}
	return out, nil
}

// Drop does nothing: Due popped the deadline already.
func (s *MemStore) Drop(Deadline) {}

// NextDeadline is the earliest queued deadline (maybe stale), 0 if none:
// a driver need not call FireDue while the watermark is not past it.
func (s *MemStore) NextDeadline() int64 {
	if len(s.timers) == 0 {
		return 0
	}
	return s.timers[0].at
}

// memTimer is the absence deadline of one armed (rule, key).
type memTimer struct {
	at   int64 // unix nanoseconds
	rule *rules.Rule
	key  string
	st   *State
}

// memTimers is a min-heap of timers by time.
type memTimers []memTimer

func (h memTimers) Len() int           { return len(h) }
func (h memTimers) Less(i, j int) bool { return h[i].at < h[j].at }
func (h memTimers) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *memTimers) Push(x any)        { *h = append(*h, x.(memTimer)) }
func (h *memTimers) Pop() any {
	old := *h
	d := old[len(old)-1]
	*h = old[:len(old)-1]
	return d
}

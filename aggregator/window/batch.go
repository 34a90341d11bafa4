package window

import (
	"bytes"
	"encoding/binary"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/rules"
)

// Badger keys of the windows stage (see aggregator/state):
//
//	w/<rule>@<fingerprint>\x00<group key>   engine.State (aggregator/engine/codec.go), with a TTL
//	t/<deadline, 8 bytes BE><state key>       absence timer index: armed deadlines in time order
//	m/windows                                  newest event time seen (8 bytes BE), for the watermark
//
// The rule's fingerprint is in the state key, so editing a rule starts its
// state afresh while a reload keeps the state of every unchanged rule.
const (
	statePrefix = "w/"
	timerPrefix = "t/"
	markKey     = "m/windows"
)

func stateKey(r *rules.Rule, key string) string {
	return string(appendStateKey(nil, r, key))
}

// appendStateKey appends (r, key)'s state key to b: looked up as
// string(b), a key in memory costs no allocation.
func appendStateKey(b []byte, r *rules.Rule, key string) []byte {
	b = append(b, statePrefix...)
	b = append(b, r.ID...)
	b = append(b, '@')
	b = append(b, r.Fingerprint...)
	b = append(b, 0)
	return append(b, key...)
}

// parseStateKey splits a state key into rule id, fingerprint and group key.
func parseStateKey(k string) (rule, fp, key string, ok bool) {
	k, ok = strings.CutPrefix(k, statePrefix)
	if !ok {
		return "", "", "", false
	}
	head, key, ok := strings.Cut(k, "\x00")
	if !ok {
		return "", "", "", false
	}
	rule, fp, ok = strings.Cut(head, "@")
	return rule, fp, key, ok
}

func timerKey(deadline int64, sk string) []byte {
	b := make([]byte, 0, len(timerPrefix)+8+len(sk))
	b = append(b, timerPrefix...)
	b = binary.BigEndian.AppendUint64(b, uint64(deadline))
	return append(b, sk...)
}

// batch is one batch of matches, or one deadline check, over the states in
// memory: the engine.Txn of the store. It changes the states in place;
// they become durable with the next checkpoint.
type batch struct {
	s   *store
	txn *badger.Txn // read-only: states not in memory, and the timer index
	// order is the states this batch touched, in order; each is stamped
	// with the batch's seq (entry.batch).
	seq   uint64
	order []*entry
	key   []byte // scratch: the state key being looked up

	// added counts, per rule, the new keys this batch created so far: the
	// key cap holds within one batch too (done makes them live).
	added map[string]int

	// What became of the batch's matches (or, a deadline check, of the
	// deadlines it found passed), for the metrics once durable.
	verdicts  [len(verdictNames)]int
	deadlines bool // a deadline check, not a batch a consumer handed
	unknown   int
	keyCaps   map[string]int // by rule

	// positions are the consumer messages the batch applied (applied.go);
	// redelivered counts those it skipped, which the states already held.
	positions   applied
	redelivered int
	// republished counts the matches it skipped from EVENTS messages the
	// states already held (a rule filter handed its events again).
	republished int
}

func (b *batch) keyCapHit(rule string) {
	if b.keyCaps == nil {
		b.keyCaps = map[string]int{}
	}
	b.keyCaps[rule]++
}

// State returns the state of (r, key) for this batch (engine.Txn). A key
// not yet stored counts against the rule's key cap if capped (deadline
// checks must always see their state).
func (b *batch) State(r *rules.Rule, key string, capped bool) (*engine.State, error) {
	b.key = appendStateKey(b.key[:0], r, key)
	e := b.s.mem[string(b.key)]
	if e != nil {
		b.s.decoded(e) // sealed, or let go of (maybe since this batch touched it)
		if e.batch == b.seq {
			return &e.st, nil
		}
		b.s.touch(e)
	} else if e = b.s.thaw(r, b.key); e != nil {
		b.s.keep(e)
	}
	if e == nil {
		if b.txn == nil {
			b.txn = b.s.db.NewTransaction(false)
		}
		var err error
		if e, err = b.s.load(b.txn, r, string(b.key)); err != nil {
			return nil, err
		}
		if !e.stored && !b.admitNew(r, capped) {
			return nil, engine.ErrKeyCap
		}
		b.s.keep(e)
	} else if e.st.Empty() && !e.live && !b.admitNew(r, capped) {
		return nil, engine.ErrKeyCap
	}
	e.r = r
	e.batch = b.seq
	b.order = append(b.order, e)
	return &e.st, nil
}

// admitNew reports whether a new key of r may be created: uncapped (a
// deadline check), or the rule's live keys plus those this batch already
// created stay under windows.max_keys_per_rule; it counts the key then.
func (b *batch) admitNew(r *rules.Rule, capped bool) bool {
	if !capped {
		return true
	}
	if b.s.liveKeys[r.ID]+b.added[r.ID] >= b.s.cfg.MaxKeysPerRule {
		return false
	}
	if b.added == nil {
		b.added = map[string]int{}
	}
	b.added[r.ID]++
	return true
}

// Armed does nothing: the checkpoint indexes each state's deadline as it
// finds it (engine.Txn).
func (b *batch) Armed(*rules.Rule, string, *engine.State, int64) {}

// Drop deletes a stale deadline's timer key with the next checkpoint
// (engine.Txn).
func (b *batch) Drop(d engine.Deadline) { b.s.drops[string(d.Ref.([]byte))] = struct{}{} }

// done ends the batch: it counts the keys it added and removed against the
// rules' key caps, lets go of its read transaction, and of decoded states
// beyond cache_keys (letGoDirty).
func (b *batch) done() {
	for _, e := range b.order {
		b.s.account(e)
	}
	b.discard()
	b.s.letGoDirty()
}

func (b *batch) discard() {
	if b.txn != nil {
		b.txn.Discard()
		b.txn = nil
	}
}

// ttl is how long a state outlives its last update: long enough for every
// window, suppression, deadline and learning period it takes part in, plus
// the grace that lets a backlog replayed after downtime find it.
func (s *store) ttl(r *rules.Rule) time.Duration {
	d := r.Window + s.cfg.MaxLateness() + r.Suppress + r.For + s.cfg.StateGrace
	if r.Kind == rules.KindNewValue {
		d += max(2*r.Learning, 30*24*time.Hour)
	}
	return d
}

// Due lists up to limit armed deadlines before the watermark, from the
// timer index as of the last durable checkpoint, less the keys a later one
// deletes (engine.Txn). A deadline armed since is indexed by the next
// checkpoint, before the watermark can move past what armed it.
func (b *batch) Due(watermark int64, limit int) ([]engine.Deadline, error) {
	if b.txn == nil {
		b.txn = b.s.db.NewTransaction(false)
	}
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.Prefix = []byte(timerPrefix)
	it := b.txn.NewIterator(opts)
	defer it.Close()
	end := timerKey(watermark, "")
	var out []engine.Deadline
	for it.Rewind(); it.Valid() && (limit < 1 || len(out) < limit); it.Next() {
		k := it.Item().KeyCopy(nil)
		if bytes.Compare(k, end) >= 0 {
			break
		}
		if b.s.dropped(string(k)) {
			continue
		}
		rule, fp, key, ok := parseStateKey(string(k[len(timerPrefix)+8:]))
		if !ok {
			b.s.drops[string(k)] = struct{}{}
			continue
		}
		deadline := int64(binary.BigEndian.Uint64(k[len(timerPrefix):]))
		out = append(out, engine.Deadline{At: deadline, Rule: rule, Fingerprint: fp, Key: key, Ref: k})
	}
	return out, nil
}

// loadWatermark restores the newest event time committed before a
// restart; idle time counts from now.
func (s *Stage) loadWatermark() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	mark, err := s.loadMark()
	s.wm.Restore(mark)
	return err
}

package window

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
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
	return statePrefix + r.ID + "@" + r.Fingerprint + "\x00" + key
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

// batch is one read-modify-write transaction over group states: the
// engine.Txn of the Badger store.
type batch struct {
	s      *store
	txn    *badger.Txn
	states map[string]*loaded
	order  []string
	drops  [][]byte

	// added counts, per rule, the new keys this batch created so far: the
	// key cap holds within one batch too (account makes them live).
	added map[string]int

	// What became of the batch's matches, for the metrics once committed.
	verdicts [len(verdictNames)]int
	unknown  int
	keyCaps  map[string]int // by rule
}

func (b *batch) keyCapHit(rule string) {
	if b.keyCaps == nil {
		b.keyCaps = map[string]int{}
	}
	b.keyCaps[rule]++
}

type loaded struct {
	r        *rules.Rule
	st       *engine.State
	deadline int64 // the deadline indexed when loaded
	existed  bool  // the key was in Badger when loaded
}

// State returns the state of (r, key) for this batch (engine.Txn). A key
// not yet stored counts against the rule's key cap if capped (deadline
// checks must always see their state).
func (b *batch) State(r *rules.Rule, key string, capped bool) (*engine.State, error) {
	sk := stateKey(r, key)
	if l, ok := b.states[sk]; ok {
		return l.st, nil
	}
	// A layer (applied, being committed) holds the newest state; then the
	// cache (committed); then Badger. A copy each time: the batch may still
	// fail, and layers and cache must keep what they hold.
	for i := len(b.s.layers) - 1; i >= 0; i-- {
		if l, ok := b.s.layers[i].b.states[sk]; ok {
			if l.st.Empty() { // deleted, or never written, by that commit
				if !b.admitNew(r, capped) {
					return nil, engine.ErrKeyCap
				}
				return b.keep(r, sk, &engine.State{}, false), nil
			}
			return b.keep(r, sk, l.st.Clone(), true), nil
		}
	}
	if cached, ok := b.s.cache.Get(sk); ok {
		return b.keep(r, sk, cached.Clone(), true), nil
	}
	st := &engine.State{}
	existed := true
	item, err := b.txn.Get([]byte(sk))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		existed = false
		if !b.admitNew(r, capped) {
			return nil, engine.ErrKeyCap
		}
	case err != nil:
		return nil, fmt.Errorf("reading window state: %w", err)
	default:
		if err := item.Value(func(v []byte) error { return engine.DecodeState(v, st) }); err != nil {
			// A state we cannot read is a bug or disk damage; start the
			// window over rather than stop the pipeline.
			b.s.log.Error("discarding unreadable window state", "key", sk, "err", err)
			st = &engine.State{}
		}
	}
	return b.keep(r, sk, st, existed), nil
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

// keep makes st the batch's state of sk. existed says whether sk is in
// Badger (or will be once the layers before this batch are committed).
func (b *batch) keep(r *rules.Rule, sk string, st *engine.State, existed bool) *engine.State {
	b.states[sk] = &loaded{r: r, st: st, deadline: st.Deadline, existed: existed}
	b.order = append(b.order, sk)
	return st
}

func (b *batch) dropTimer(k []byte) { b.drops = append(b.drops, k) }

// Armed does nothing: write indexes each state's deadline as it finds it
// (engine.Txn).
func (b *batch) Armed(*rules.Rule, string, *engine.State, int64) {}

// Drop deletes a stale deadline's timer key with the batch (engine.Txn).
func (b *batch) Drop(d engine.Deadline) { b.dropTimer(d.Ref.([]byte)) }

// ttl is how long a state outlives its last update: long enough for every
// window, suppression, deadline and learning period it takes part in, plus
// the grace that lets a backlog replayed after downtime find it.
func (b *batch) ttl(r *rules.Rule) time.Duration {
	d := r.Window + b.s.cfg.MaxLateness() + r.Suppress + r.For + b.s.cfg.StateGrace
	if r.Kind == rules.KindNewValue {
		d += max(2*r.Learning, 30*24*time.Hour)
	}
	return d
}

// account counts the keys the batch adds and removes against the rules'
// key caps (under the stage's lock; the write happens later, elsewhere).
func (b *batch) account() {
	for _, sk := range b.order {
		l := b.states[sk]
		switch empty := l.st.Empty(); {
		case empty && l.existed:
			b.s.liveKeys[l.r.ID]--
			b.s.keysTotal.Add(-1)
		case !empty && !l.existed:
			b.s.liveKeys[l.r.ID]++
			b.s.keysTotal.Add(1)
		}
	}
}

// write writes the states, the timer index and the watermark mark, and
// commits. It runs on the committer goroutine and touches nothing of the
// stage but the DB.
func (b *batch) write(maxTime int64) error {
	for _, sk := range b.order {
		l := b.states[sk]
		if l.deadline != l.st.Deadline {
			if l.deadline != 0 {
				b.drops = append(b.drops, timerKey(l.deadline, sk))
			}
			if l.st.Deadline != 0 {
				// A timer lives no longer than its state: an orphan left by a
				// state that expired meanwhile goes away by itself.
				if err := b.set(badger.NewEntry(timerKey(l.st.Deadline, sk), nil).WithTTL(b.ttl(l.r))); err != nil {
					return err
				}
			}
		}
		if l.st.Empty() {
			if l.existed {
				if err := b.del([]byte(sk)); err != nil {
					return err
				}
			}
			continue
		}
		if err := b.set(badger.NewEntry([]byte(sk), engine.AppendState(nil, l.st)).WithTTL(b.ttl(l.r))); err != nil {
			return err
		}
	}
	for _, k := range b.drops {
		if err := b.del(k); err != nil {
			return err
		}
	}
	if maxTime > 0 {
		if err := b.set(badger.NewEntry([]byte(markKey), binary.BigEndian.AppendUint64(nil, uint64(maxTime)))); err != nil {
			return err
		}
	}
	if err := b.txn.Commit(); err != nil {
		return fmt.Errorf("committing window state: %w", err)
	}
	return nil
}

// set and del write in the batch's transaction, committing and starting a
// new one when it is full. Splitting is safe: the alerts of the batch were
// published before commit, and every state is written whole.
func (b *batch) set(e *badger.Entry) error {
	err := b.txn.SetEntry(e)
	if errors.Is(err, badger.ErrTxnTooBig) {
		if err := b.txn.Commit(); err != nil {
			return fmt.Errorf("committing window state: %w", err)
		}
		b.txn = b.s.db.NewTransaction(true)
		err = b.txn.SetEntry(e)
	}
	return err
}

func (b *batch) del(k []byte) error {
	err := b.txn.Delete(k)
	if errors.Is(err, badger.ErrTxnTooBig) {
		if err := b.txn.Commit(); err != nil {
			return fmt.Errorf("committing window state: %w", err)
		}
		b.txn = b.s.db.NewTransaction(true)
		err = b.txn.Delete(k)
	}
	return err
}

// Due lists up to limit armed deadlines before the watermark, from the
// timer index (engine.Txn).
func (b *batch) Due(watermark int64, limit int) ([]engine.Deadline, error) {
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
		rule, fp, key, ok := parseStateKey(string(k[len(timerPrefix)+8:]))
		if !ok {
			b.dropTimer(k)
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

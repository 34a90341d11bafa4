package window

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/state"
)

// store is the Badger implementation of the engine's state store: each
// batch is an engine.Txn (batch.go) over the states in Badger, an LRU
// cache of committed states in front of them, and the layers of batches
// applied in memory whose commit is still on its way. It keeps the key cap
// (live keys per rule) and the deadline index (t/ keys) in step with the
// states. The Stage serializes every use of it under its mutex; the
// committer goroutine only writes layers' batches and sets failed.
type store struct {
	cfg Config
	db  *state.DB
	log *slog.Logger

	// cache holds recently used committed states in front of Badger, so a
	// hot key is not read and decoded on every batch. A state enters it only
	// after its commit.
	cache *lru.Cache[string, *engine.State]
	// layers are the batches applied in memory whose commit is not known
	// to have succeeded, oldest first; their states shadow the cache and
	// Badger. failed is set by the committer when a commit failed, and
	// cleared by reset.
	layers []*layer
	failed atomic.Bool

	liveKeys  map[string]int // live group keys per rule id (see countKeys)
	keysTotal atomic.Int64   // their sum, for the gauge (read without the lock)
}

func newStore(cfg Config, db *state.DB, log *slog.Logger) *store {
	cache, _ := lru.New[string, *engine.State](max(cfg.CacheKeys, 1)) // errs only for a size < 1
	return &store{cfg: cfg, db: db, log: log, cache: cache}
}

// newBatch begins a batch: the engine.Txn of one batch of matches or one
// deadline check.
func (s *store) newBatch() *batch {
	return &batch{s: s, txn: s.db.NewTransaction(true), states: map[string]*loaded{}}
}

// settleCommitted moves the oldest layers, as long as they committed, into
// the cache, calling committed with each.
func (s *store) settleCommitted(committed func(*layer)) {
	for len(s.layers) > 0 {
		l := s.layers[0]
		select {
		case <-l.done:
		default:
			return
		}
		if l.err != nil {
			return // reset drops it
		}
		committed(l)
		for _, sk := range l.b.order {
			if st := l.b.states[sk].st; st.Empty() {
				s.cache.Remove(sk)
			} else {
				s.cache.Add(sk, st)
			}
		}
		s.layers[0] = nil
		s.layers = s.layers[1:]
	}
}

// reset, after a failed commit, waits for every layer to be done with (the
// committer fails them all), settles those that committed before the
// failure, drops the rest and recounts the keys, so the next batch applies
// its matches to what Badger holds.
func (s *store) reset(ctx context.Context, committed func(*layer)) error {
	if !s.failed.Load() {
		return nil
	}
	for _, l := range s.layers {
		select {
		case <-l.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// The layers that committed before the failure, and were not settled
	// yet, are in Badger: their states go to the cache like any commit's,
	// or the cache would hold older ones.
	s.settleCommitted(committed)
	s.layers = nil
	s.failed.Store(false)
	return s.countKeys()
}

// loadMark reads the newest event time committed before a restart (0 if
// none).
func (s *store) loadMark() (int64, error) {
	var mark int64
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(markKey))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if len(v) == 8 {
				mark = int64(binary.BigEndian.Uint64(v))
			}
			return nil
		})
	})
	return mark, err
}

// countKeys counts the live group keys per rule, reading keys only. Keys
// that expired by TTL since the last count are not seen, so the count
// drifts up between counts and never under the truth.
func (s *store) countKeys() error {
	counts := map[string]int{}
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte(statePrefix)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if rule, _, _, ok := parseStateKey(string(it.Item().Key())); ok {
				counts[rule]++
			}
		}
		return nil
	})
	if err == nil {
		s.liveKeys = counts
		total := 0
		for _, n := range counts {
			total += n
		}
		s.keysTotal.Store(int64(total))
	}
	return err
}

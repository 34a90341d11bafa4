package window

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/state"
	"github.com/outpost-siem/outpost/rules"
)

// store is the Badger implementation of the engine's state store, with
// checkpoints (checkpoint.go): the states live in memory and change there;
// every checkpoint writes the states changed since the one before to
// Badger together, and Badger is what a restart (or a failure) starts
// again from. It keeps the key cap (live keys per rule) and the deadline
// index (t/ keys) in step with the states. The Stage serializes every use
// of it under its mutex; the checkpointer writes what a seal handed it
// without touching the store.
type store struct {
	cfg Config
	db  *state.DB
	log *slog.Logger

	// cache holds recently used states, clean or dirty, bounded to
	// cfg.CacheKeys. dirty holds the states changed since the last seal:
	// the cache may evict one, but it stays here until it is sealed.
	// sealed holds the states of the checkpoint being written, until it is
	// durable: the cache may have evicted them and Badger may not hold them
	// yet. A state is looked up in that order, then read from Badger.
	cache  *lru.Cache[string, *entry]
	dirty  map[string]*entry
	sealed map[string]*entry
	// drops are the timer keys to delete with the next checkpoint (stale
	// deadlines); sealedDrops those of the checkpoint being written. Due
	// skips both.
	drops, sealedDrops map[string]struct{}
	// failed is set by the checkpointer when a checkpoint failed, and
	// cleared by reset.
	failed atomic.Bool

	liveKeys  map[string]int // live group keys per rule id (see countKeys)
	keysTotal atomic.Int64   // their sum, for the gauge (read without the lock)
}

// entry is one (rule, group key)'s state in memory, and what Badger holds
// of it once the checkpoints sealed so far are written.
type entry struct {
	st      engine.State
	r       *rules.Rule
	stored  bool  // Badger holds the state
	indexed int64 // the deadline Badger's timer index holds (0: none)
	live    bool  // counted in liveKeys
}

func newStore(cfg Config, db *state.DB, log *slog.Logger) *store {
	cache, _ := lru.New[string, *entry](max(cfg.CacheKeys, 1)) // errs only for a size < 1
	return &store{
		cfg: cfg, db: db, log: log, cache: cache,
		dirty: map[string]*entry{}, drops: map[string]struct{}{},
	}
}

// lookup finds the state of sk in memory, marks it dirty (its caller may
// change it) and makes it the most recently used.
func (s *store) lookup(sk string) *entry {
	e, ok := s.cache.Get(sk)
	if !ok {
		if e, ok = s.dirty[sk]; !ok {
			if e, ok = s.sealed[sk]; !ok {
				return nil
			}
		}
		s.cache.Add(sk, e)
	}
	s.dirty[sk] = e
	return e
}

// load reads the state of sk from Badger through txn into a new entry,
// which it keeps (in the cache, dirty). found says whether Badger held it.
func (s *store) load(txn *badger.Txn, r *rules.Rule, sk string) (*entry, error) {
	e := &entry{r: r}
	item, err := txn.Get([]byte(sk))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
	case err != nil:
		return nil, fmt.Errorf("reading window state: %w", err)
	default:
		e.stored, e.live = true, true
		if err := item.Value(func(v []byte) error { return engine.DecodeState(v, &e.st) }); err != nil {
			// A state we cannot read is a bug or disk damage; start the
			// window over rather than stop the pipeline.
			s.log.Error("discarding unreadable window state", "key", sk, "err", err)
			e.st = engine.State{}
		}
		e.indexed = e.st.Deadline
	}
	return e, nil
}

// keep makes e the state of sk in memory, dirty.
func (s *store) keep(sk string, e *entry) {
	s.cache.Add(sk, e)
	s.dirty[sk] = e
}

// forget drops every state held in memory: after a failed checkpoint,
// what Badger holds is the truth again.
func (s *store) forget() {
	s.cache.Purge()
	s.dirty, s.sealed = map[string]*entry{}, nil
	s.drops, s.sealedDrops = map[string]struct{}{}, nil
}

// dropped reports whether timer key k is to be deleted by a checkpoint
// not yet durable.
func (s *store) dropped(k string) bool {
	if _, ok := s.drops[k]; ok {
		return true
	}
	_, ok := s.sealedDrops[k]
	return ok
}

// account counts e as live or not against its rule's key cap, as its state
// is now.
func (s *store) account(e *entry) {
	switch empty := e.st.Empty(); {
	case empty && e.live:
		e.live = false
		s.liveKeys[e.r.ID]--
		s.keysTotal.Add(-1)
	case !empty && !e.live:
		e.live = true
		s.liveKeys[e.r.ID]++
		s.keysTotal.Add(1)
	}
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

// countKeys counts the live group keys per rule, reading keys only, and
// marks the states in memory live accordingly. Keys that expired by TTL
// since the last count are not seen, so the count drifts up between
// counts and never under the truth. Call only when every state in memory
// is what Badger holds (at start, after forget).
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

// recountKeys is the periodic recount: Badger's count, corrected by the
// states changed in memory since the last checkpoint. It does nothing
// (false) while a checkpoint is being written: Badger is then between two
// truths.
func (s *store) recountKeys() (bool, error) {
	if s.sealed != nil {
		return false, nil
	}
	if err := s.countKeys(); err != nil {
		return false, err
	}
	for _, e := range s.dirty {
		switch {
		case e.live && !e.stored:
			s.liveKeys[e.r.ID]++
			s.keysTotal.Add(1)
		case !e.live && e.stored:
			s.liveKeys[e.r.ID]--
			s.keysTotal.Add(-1)
		}
	}
	return true, nil
}

package window

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/state"
	"github.com/outpost-siem/outpost/rules"
)

// store is the durable implementation of the engine's state store, with
// checkpoints (checkpoint.go): the states live in memory and change there;
// every checkpoint appends the states changed since the one before to the
// state log together (log.go), compactions move the log into Badger's
// keyed states, and the two are what a restart (or a failure) starts again
// from ("Badger holds" below means that overlay). It keeps the key cap
// (live keys per rule) and the deadline index (t/ keys) in step with the
// states. The Stage serializes every use of it under its mutex; the
// checkpointer and the compactions write what a seal or a compaction
// handed them without touching the rest of the store.
type store struct {
	cfg Config
	db  *state.DB
	js  jetstream.JetStream // the state log's stream (log.go)
	log *slog.Logger

	// mem holds every state in memory, by its key: those changed since
	// the last seal (dirty), those of the checkpoint being written
	// (sealed: Badger may not hold them yet), and clean ones, which a
	// later batch is likely to touch again. It is the one table a state
	// is looked up in before it is read back from cold, the log or
	// Badger. The clean states are on a list in the order they became
	// clean (the least recently used first: a state becomes dirty when
	// used, and clean again once its checkpoint is durable), and the
	// first ones are let go of while more than cfg.CacheKeys states are
	// decoded. A dirty or sealed state never leaves mem until its
	// checkpoint is durable, but may be held encoded there (entry.encoded:
	// letGoDirty, the checkpointer).
	mem  map[string]*entry
	free []*entry // entries let go of, for reuse (recycle)
	// encodedN counts the entries of mem whose state is encoded (entry.
	// encoded): the checkpointer adds those it lets go of. letFrom is
	// where letGoDirty goes on in dirty.
	encodedN atomic.Int64
	memN     atomic.Int64 // len(mem), for the gauge (read without the lock)
	letFrom  int
	keeping  *entry   // the entry keep is making mem's, which letGoDirty skips
	clean    entry    // the list's sentinel: clean.next is the least recently used
	dirty    []*entry // in the order they became dirty
	sealed   []*entry // nil when no checkpoint is being written
	// cold holds, encoded, states mem let go of, up to cfg.ColdBytes of
	// them: reading one back is a map lookup and a decode, not a Badger
	// read. A state is in cold or in mem, never both (taking it back out
	// removes it), so cold is never staler than mem; mem never lets go of
	// a state changed since the last durable checkpoint.
	cold      map[string]coldState
	coldBytes atomic.Int64
	// reads counts the states read back into mem: from cold, and
	// from Badger (found or not), for the metrics.
	coldReads, logReads, badgerReads atomic.Int64
	// drops are the timer keys to delete with the next checkpoint (stale
	// deadlines); sealedDrops those of the checkpoint being written. Due
	// skips both.
	drops, sealedDrops map[string]struct{}
	// failed is set by the checkpointer when a checkpoint failed, and
	// cleared by reset.
	failed atomic.Bool

	// logged holds the latest logged encoding of every state the log
	// (log.go) holds after the compaction mark, that is what Badger holds
	// of it, until a compaction writes them under their keys; compacting,
	// those a compaction is writing. A state not in memory is looked up
	// there before Badger's keyed states. logBytes is their memory;
	// logSize the bytes of the log records since the compaction began
	// last; logThrough the seq of the newest durable record, logMark the
	// compaction mark, nextSeq the next record's seq. compactDone is
	// closed when the running compaction (if not nil) ends.
	logged, compacting  map[string]logState
	logBytes            atomic.Int64
	logSize             int64
	logThrough, logMark uint64
	logStream           uint64 // the stream sequence of logThrough's last message
	logTail             uint64 // the stream sequence of the subject's last message known (logRecord.after)
	nextSeq             uint64
	logChunk            int    // the size the log's messages are cut at (tests make it small)
	compactChunk        int    // the states a compaction writes and lets go of at a time (tests make it small)
	instance            string // this instance's id: its subject of STATELOG (log.go)
	lastCompact         time.Time
	// compactRetry is when a failed compaction may be tried again, after
	// compactBackoff.
	compactRetry   time.Time
	compactBackoff time.Duration
	compactDone    chan struct{}

	// applied holds the positions of the consumer messages whose matches
	// the durable checkpoints hold (applied.go); streams the creation time
	// of each stream whose positions are kept (MATCHES), which the
	// positions are of.
	applied applied
	streams map[string]int64

	batches   uint64         // the seq of the last batch begun
	liveKeys  map[string]int // live group keys per rule id (see countKeys)
	keysTotal atomic.Int64   // their sum, for the gauge (read without the lock)
}

// coldState is an entry in cold: its state encoded (engine.AppendState)
// and its flags.
type coldState struct {
	enc          []byte
	indexed      int64
	stored, live bool
}

// coldOverhead is what a cold state costs beyond its key and encoding: the
// map's slot and the slice header, for the byte budget.
const coldOverhead = 64

// entry is one (rule, group key)'s state in memory, and what Badger holds
// of it once the checkpoints sealed so far are written.
type entry struct {
	st      engine.State
	r       *rules.Rule
	sk      string // its state key, as mem holds it
	stored  bool   // Badger holds the state
	indexed int64  // the deadline Badger's timer index holds (0: none)
	live    bool   // counted in liveKeys

	// dirty and sealed say whether it is in store.dirty and store.sealed
	// (it may be in both); prev and next link it into the clean list when
	// it is in neither.
	dirty, sealed bool
	prev, next    *entry
	// batch is the seq of the last batch that touched it (batch.seq).
	batch uint64

	// sealing and sealedEnc let a checkpoint encode the state as it was
	// sealed without holding the stage's mutex (copy on write): seal sets
	// sealing to sealPending; the checkpointer, or the first batch to
	// touch the state before it did (it must not change the state first),
	// claims it (sealEncoding), encodes it into sealedEnc and sets
	// sealDone; the other one waits for that, or takes the encoding.
	sealing   atomic.Int32
	sealedEnc []byte
	// encoded says the decoded state was let go of, and enc is the
	// state: the checkpointer's, once it has encoded a sealed state
	// (sealedState), or the stage's, for a dirty state when more than
	// cfg.CacheKeys are decoded (store.letGoDirty). A batch that touches it
	// decodes it again (store.decoded). encDeadline and encEmpty are what
	// a seal needs of it. Decoded, a state takes several times its
	// encoding's memory: at 100,000 keys the states changed since the
	// last checkpoint, and those of the checkpoint being written, held
	// most of the heap.
	encoded     bool
	enc         []byte
	encDeadline int64
	encEmpty    bool
}

// deadline is the state's absence deadline, decoded or not.
func (e *entry) deadline() int64 {
	if e.encoded {
		return e.encDeadline
	}
	return e.st.Deadline
}

// empty reports whether the state holds nothing, decoded or not.
func (e *entry) empty() bool {
	if e.encoded {
		return e.encEmpty
	}
	return e.st.Empty()
}

// encode lets go of the decoded state, keeping enc (its encoding).
func (e *entry) encode(enc []byte) {
	e.enc, e.encDeadline, e.encEmpty = enc, e.st.Deadline, e.st.Empty()
	e.st, e.encoded = engine.State{}, true
}

// The values of entry.sealing.
const (
	sealNone int32 = iota
	sealPending
	sealEncoding
	sealDone
)

// sealedState returns the state's encoding as it was sealed, encoding it
// if no one has yet. The checkpointer calls it for every state it seals,
// with drop (store.encodedN): when it is the one that encodes it, it lets
// go of the decoded state (encoded) and counts it there; a batch, before
// reading or changing a sealed state (store.decoded), with nil.
func (e *entry) sealedState(drop *atomic.Int64) []byte {
	for {
		switch e.sealing.Load() {
		case sealPending:
			if e.sealing.CompareAndSwap(sealPending, sealEncoding) {
				e.sealedEnc = engine.EncodeState(&e.st)
				if drop != nil {
					e.encode(e.sealedEnc)
					drop.Add(1)
				}
				e.sealing.Store(sealDone)
				return e.sealedEnc
			}
		case sealEncoding:
			runtime.Gosched() // a few microseconds: the other side is encoding it
		default:
			return e.sealedEnc
		}
	}
}

func newStore(cfg Config, db *state.DB, js jetstream.JetStream, log *slog.Logger) *store {
	s := &store{
		cfg: cfg, db: db, js: js, log: log,
		drops: map[string]struct{}{},
		cold:  map[string]coldState{}, logged: map[string]logState{}, nextSeq: 1, logChunk: logChunk, compactChunk: compactChunk,
		applied: applied{},
	}
	s.forgetMem()
	return s
}

// forgetMem empties mem.
func (s *store) forgetMem() {
	s.mem = map[string]*entry{}
	s.encodedN.Store(0)
	s.memN.Store(0)
	s.clean.prev, s.clean.next = &s.clean, &s.clean
	s.dirty, s.sealed, s.letFrom = nil, nil, 0
}

// unlink takes e off the clean list, if it is on it.
func (s *store) unlink(e *entry) {
	if e.next != nil {
		e.prev.next, e.next.prev = e.next, e.prev
		e.prev, e.next = nil, nil
	}
}

// cleaned puts e, neither dirty nor sealed any more, at the end of the
// clean list: the most recently used.
func (s *store) cleaned(e *entry) {
	last := s.clean.prev
	e.prev, e.next = last, &s.clean
	last.next, s.clean.prev = e, e
}

// touch marks e dirty: its caller may change it.
func (s *store) touch(e *entry) {
	if !e.dirty {
		e.dirty = true
		s.dirty = append(s.dirty, e)
		s.unlink(e)
	}
}

// shrink lets go of the least recently used clean states while more than
// cfg.CacheKeys states are decoded, keeping them in cold within its
// budget. Dirty ones go at the end of each batch (letGoDirty).
func (s *store) shrink() {
	for s.decodedCount() > s.cfg.CacheKeys && s.clean.next != &s.clean {
		e := s.clean.next
		s.unlink(e)
		s.release(e)
	}
}

// release takes e, clean, out of mem for good: its state goes to cold
// within its budget, the entry to reuse.
func (s *store) release(e *entry) {
	s.forgetEntry(e)
	s.freeze(e.sk, e)
	s.recycle(e)
}

// maxFree bounds the entries kept for reuse.
const maxFree = 1024

// recycle keeps e, let go of, for the next state read back (newEntry):
// at 100,000 keys a state is let go of for nearly every one read back,
// and their entries were a sixth of the windows' allocations. Nothing
// points to a clean entry once mem does not: a batch, the dirty and
// sealed lists and a checkpoint being written hold only entries that are
// not clean (the Stage's mutex orders the rest).
func (s *store) recycle(e *entry) {
	if len(s.free) < maxFree {
		*e = entry{}
		s.free = append(s.free, e)
	}
}

// newEntry is a new entry for the state of sk of r: one recycled, if any.
func (s *store) newEntry(r *rules.Rule, sk string) *entry {
	if n := len(s.free); n > 0 {
		e := s.free[n-1]
		s.free = s.free[:n-1]
		e.r, e.sk = r, sk
		return e
	}
	return &entry{r: r, sk: sk}
}

// freeze keeps e in cold, encoded, within the byte budget.
func (s *store) freeze(sk string, e *entry) {
	if s.cfg.ColdBytes <= 0 || e.empty() {
		return
	}
	if old, ok := s.cold[sk]; ok {
		s.dropCold(sk, old)
	}
	enc := e.enc
	if !e.encoded {
		enc = engine.EncodeState(&e.st)
	}
	c := coldState{enc: enc, indexed: e.indexed, stored: e.stored, live: e.live}
	size := int64(len(sk) + len(c.enc) + coldOverhead)
	budget := int64(s.cfg.ColdBytes)
	for k, old := range s.cold {
		if s.coldBytes.Load()+size <= budget {
			break
		}
		s.dropCold(k, old)
	}
	if s.coldBytes.Load()+size > budget {
		return
	}
	s.cold[sk] = c
	s.coldBytes.Add(size)
}

func (s *store) dropCold(sk string, c coldState) {
	delete(s.cold, sk)
	s.coldBytes.Add(-int64(len(sk) + len(c.enc) + coldOverhead))
}

// thaw decodes sk's state from cold into a new entry (nil if cold does
// not hold it).
func (s *store) thaw(r *rules.Rule, key []byte) *entry {
	c, ok := s.cold[string(key)]
	if !ok {
		return nil
	}
	sk := string(key)
	s.coldReads.Add(1)
	e := s.newEntry(r, sk)
	e.indexed, e.stored, e.live = c.indexed, c.stored, c.live
	if err := engine.DecodeState(c.enc, &e.st); err != nil {
		// Encoded by this process a moment ago: a bug. Badger holds the
		// state as of the last checkpoint; read it there.
		s.log.Error("discarding an unreadable cold window state", "key", sk, "err", err)
		s.dropCold(sk, c)
		return nil
	}
	return e
}

// load reads the state of sk from Badger through txn into a new entry,
// for its caller to keep. e.stored says whether Badger held it.
func (s *store) load(txn *badger.Txn, r *rules.Rule, sk string) (*entry, error) {
	e := s.newEntry(r, sk)
	if st, ok := s.logLookup(sk); ok {
		s.logReads.Add(1)
		if st.enc == nil || st.expired(uint64(time.Now().Unix())) {
			return e, nil // emptied, or expired: Badger would not return it
		}
		s.restore(e, sk, st.enc)
		return e, nil
	}
	s.badgerReads.Add(1)
	item, err := txn.Get([]byte(sk))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
	case err != nil:
		return nil, fmt.Errorf("reading window state: %w", err)
	default:
		if err := item.Value(func(v []byte) error { s.restore(e, sk, v); return nil }); err != nil {
			s.restore(e, sk, nil) // unreadable: start over, as a damaged value does
		}
	}
	return e, nil
}

// restore makes e the stored state of sk encoded as enc. A state we cannot
// read is a bug or disk damage; the window starts over rather than stop
// the pipeline.
func (s *store) restore(e *entry, sk string, enc []byte) {
	e.stored, e.live = true, true
	if err := engine.DecodeState(enc, &e.st); err != nil {
		s.log.Error("discarding unreadable window state", "key", sk, "err", err)
		e.st = engine.State{}
	}
	e.indexed = e.st.Deadline
}

// decoded makes e's state readable and changeable by the stage: a sealed
// state is encoded first if the checkpointer has not yet (it must write
// it as sealed, not as changed since), and a state let go of is decoded
// again. Call with mu held, before any use of e.st.
func (s *store) decoded(e *entry) {
	if e.sealing.Load() != sealNone {
		e.sealedState(nil)
	}
	if !e.encoded {
		return
	}
	enc := e.enc
	e.encoded, e.enc = false, nil
	s.encodedN.Add(-1)
	if err := engine.DecodeState(enc, &e.st); err != nil {
		// Encoded by this process a moment ago: a bug. A checkpoint
		// writes what it sealed whatever this state becomes.
		s.log.Error("discarding an unreadable window state let go of", "key", e.sk, "err", err)
		e.st = engine.State{}
	}
}

// decodedCount is how many states mem holds decoded.
func (s *store) decodedCount() int { return len(s.mem) - int(s.encodedN.Load()) }

// letGoDirty lets go of the decoded states of dirty entries, the longest
// dirty first, while more than cfg.CacheKeys states are decoded (the
// clean ones went first: shrink): each keeps its encoding until its
// checkpoint writes it (seal takes it as is). Call with mu held, when no
// state handed to the engine is in use: between batches, or when keep
// makes a new entry mem's (not that one, which it hands to the engine
// next). A state the batch touched and needs again is decoded again
// (batch.State); the batch counts it by entry.empty when it ends.
func (s *store) letGoDirty() {
	for s.letFrom < len(s.dirty) && s.decodedCount() > s.cfg.CacheKeys {
		e := s.dirty[s.letFrom]
		s.letFrom++
		if e.encoded || !e.dirty || e == s.keeping {
			continue
		}
		// Dirty entries are never being encoded by the checkpointer: one
		// touched since its seal went through decoded (sealDone).
		e.encode(engine.EncodeState(&e.st))
		s.encodedN.Add(1)
	}
}

// forgetEntry takes e out of mem.
func (s *store) forgetEntry(e *entry) {
	delete(s.mem, e.sk)
	s.memN.Add(-1)
	if e.encoded {
		s.encodedN.Add(-1)
	}
}

// keep makes e, new in memory, the state of its key there, dirty; cold
// lets go of its copy.
func (s *store) keep(e *entry) {
	if c, ok := s.cold[e.sk]; ok {
		s.dropCold(e.sk, c)
	}
	s.touch(e)
	s.mem[e.sk] = e
	s.memN.Add(1)
	s.keeping = e // handed to the batch next: not to be let go of
	s.shrink()
	s.letGoDirty()
	s.keeping = nil
}

// forget drops every state held in memory but the log's: after a failed
// checkpoint, what Badger holds is the truth again (reset reads the log
// again too: the failed checkpoint may have written part of a record).
func (s *store) forget() {
	s.forgetMem()
	s.cold = map[string]coldState{}
	s.coldBytes.Store(0)
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
	switch empty := e.empty(); {
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
	mark, err := s.readUint(markKey)
	return int64(mark), err
}

// countKeys counts the live group keys per rule: Badger's keyed states,
// reading keys only, overlaid by the log's. Keys that expired by TTL
// since the last count are not seen, so the count drifts up between
// counts and never under the truth. Call only when every state in memory
// is what Badger holds (at start, after forget).
func (s *store) countKeys() error {
	counts := map[string]int{}
	now := uint64(time.Now().Unix())
	countLog := func(sk string, st logState) {
		if st.enc != nil && !st.expired(now) {
			if rule, _, _, ok := parseStateKey(sk); ok {
				counts[rule]++
			}
		}
	}
	for sk, st := range s.logged {
		countLog(sk, st)
	}
	for sk, st := range s.compacting {
		if _, newer := s.logged[sk]; !newer {
			countLog(sk, st)
		}
	}
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte(statePrefix)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if _, ok := s.logLookup(string(k)); ok {
				continue // counted from the log
			}
			if rule, _, _, ok := parseStateKey(string(k)); ok {
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

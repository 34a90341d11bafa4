package window

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// epoch is the batches applied since the last seal: their alerts' acks,
// the newest event time they let the watermark move to and what became of
// their matches. done is closed once their states are durable, or failed
// (err).
type epoch struct {
	started  time.Time // wall clock of its first batch, for checkpoint_interval
	waits    []func(context.Context) error
	maxTime  int64
	arrived  time.Time // the stage's clock at its last batch: idle time counts from it
	batches  int
	handed   int // of them, batches a consumer handed (not deadline checks)
	bytes    int // of the batches' messages
	verdicts [len(verdictNames)]int
	// deadlines is what became of the absence deadlines its deadline
	// checks found passed (not matches: outpost_windows_deadlines_total).
	deadlines [len(verdictNames)]int
	unknown   int
	keyCaps   map[string]int
	// positions are the consumer messages its batches applied, which its
	// checkpoint's record carries; redelivered those they skipped,
	// republished the matches they skipped by EVENTS position.
	positions   applied
	redelivered int
	republished int
	done        chan struct{}
	err         error
}

func newEpoch(now time.Time) *epoch {
	return &epoch{arrived: now, positions: applied{}, done: make(chan struct{})}
}

// add makes a batch part of the epoch: wait collects its alerts' acks.
func (ep *epoch) add(b *batch, wait func(context.Context) error, maxTime int64, now time.Time) {
	if ep.batches == 0 {
		ep.started = time.Now()
	}
	ep.batches++
	ep.waits = append(ep.waits, wait)
	ep.maxTime, ep.arrived = max(ep.maxTime, maxTime), now
	for v, n := range b.verdicts {
		if b.deadlines {
			ep.deadlines[v] += n
		} else {
			ep.verdicts[v] += n
		}
	}
	ep.unknown += b.unknown
	ep.positions.union(b.positions)
	ep.redelivered += b.redelivered
	ep.republished += b.republished
	for rule, n := range b.keyCaps {
		if ep.keyCaps == nil {
			ep.keyCaps = map[string]int{}
		}
		ep.keyCaps[rule] += n
	}
}

func (ep *epoch) finish(err error) {
	ep.err = err
	close(ep.done)
}

// checkpoint is a sealed epoch's writes: the timer keys of its armed
// states, then its record in the state log (its states, emptied ones
// included, and its positions), then the old timer keys deleted, then the
// mark.
type checkpoint struct {
	ep  *epoch
	log *logRecord
	// sealed are the states to append to the log: encoded by write
	// (entry.sealedState), or, with no entry, emptied.
	sealed []sealedState
	dels   [][]byte
	sets   []*badger.Entry
	mark   int64
	states int
	// letGo: write lets go of each state's decoded copy once it has
	// encoded it (entry.sealedState), because more than half of
	// cache_keys states were decoded when it was sealed: those and the
	// ones changed while it is written may not all fit. With fewer (a
	// few busy keys) they stay decoded for the batches that touch them
	// next.
	letGo bool
}

// sealedState is a state a checkpoint appends to the log.
type sealedState struct {
	sk      string
	e       *entry // nil: emptied
	expires uint64
}

// requestCheckpoint asks the checkpointer for a checkpoint now rather
// than at the interval.
func (s *Stage) requestCheckpoint() {
	select {
	case s.sealNow <- struct{}{}:
	default:
	}
}

// Checkpoint makes every batch applied so far durable, and returns once
// it is (or failed).
func (s *Stage) Checkpoint(ctx context.Context) error {
	s.mu.Lock()
	if s.failed.Load() {
		// No checkpoint is written until Reset ran.
		s.mu.Unlock()
		return errEarlierFailed
	}
	ep := s.cur
	if ep.batches == 0 && len(s.drops) == 0 {
		ep = s.writing
	}
	s.mu.Unlock()
	if ep == nil {
		return nil
	}
	s.requestCheckpoint()
	select {
	case <-ep.done:
		return ep.err
	case <-s.dead:
		return errKilled
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fail drops the epoch in progress after a failure: its batches, and
// every batch since the last checkpoint, are applied again from what
// Badger holds once Reset ran; until then every batch fails. Call with mu
// held.
func (s *Stage) fail() {
	s.failed.Store(true)
	if s.cur.batches > 0 {
		s.toHandAgain += s.cur.handed
	}
	// Finished even with no batch: a Checkpoint may wait for it (one
	// holding only timer deletions), and no checkpoint will seal it.
	s.cur.finish(errEarlierFailed)
	s.cur = newEpoch(s.now())
}

// Reset, after a failure, waits for the checkpoint being written, drops
// the states in memory and recounts the keys, so the next batch applies
// its matches to what Badger holds. The consumer calls it before it hands
// the failed batches again; the deadline checks, when the failed epochs
// held only deadline checks (nothing will be handed again).
func (s *Stage) Reset(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reset(ctx)
}

// reset is Reset with mu held.
func (s *Stage) reset(ctx context.Context) error {
	if !s.failed.Load() {
		return nil
	}
	// Each wait releases mu: another reset (the consumer's, the deadline
	// checks') may have run meanwhile, and batches been applied on what it
	// read; then this one has nothing left to do.
	for s.writing != nil || s.compactDone != nil {
		var err error
		if s.writing != nil {
			err = s.waitWriting(ctx)
		} else {
			err = s.waitCompaction(ctx)
		}
		if err != nil {
			return err
		}
		if !s.failed.Load() {
			return nil
		}
	}
	s.forget()
	if err := s.loadLog(ctx, true); err != nil {
		return err
	}
	if err := s.countKeys(); err != nil {
		return fmt.Errorf("counting window state keys: %w", err)
	}
	s.failed.Store(false)
	s.toHandAgain = 0
	return nil
}

// waitCompaction waits, with mu released, for the running compaction.
func (s *Stage) waitCompaction(ctx context.Context) error {
	done := s.compactDone
	s.mu.Unlock()
	defer s.mu.Lock()
	select {
	case <-done:
		return nil
	case <-s.dead:
		return errKilled
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runCheckpoints writes a checkpoint every checkpoint_interval while
// batches are applied, and when asked (requestCheckpoint); when ctx ends,
// a last one, then it fails any batch applied after it.
func (s *Stage) runCheckpoints(ctx context.Context) {
	defer s.compactions.Wait()
	tick := time.NewTicker(max(s.cfg.CheckpointInterval/4, 5*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if s.killed.Load() {
				return
			}
			fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			s.checkpoint(fctx)
			cancel()
			s.mu.Lock()
			s.stopped = true
			s.fail()
			s.mu.Unlock()
			return
		case <-tick.C:
			s.mu.Lock()
			due := (s.cur.batches > 0 && time.Since(s.cur.started) >= s.cfg.CheckpointInterval) || len(s.drops) > 0
			s.mu.Unlock()
			if !due {
				continue
			}
		case <-s.sealNow:
		}
		s.checkpoint(ctx)
		if s.killed.Load() {
			return
		}
	}
}

// errKilled is what a test's kill hook returns to stop a checkpoint at a
// step, as kill -9 would: nothing after it happens.
var errKilled = errors.New("killed")

// step calls the test's kill hook, if any, at a step of a checkpoint.
func (s *Stage) step(name string) error {
	if s.kill == nil {
		return nil
	}
	if s.killed.Load() {
		return errKilled // another goroutine's step killed it
	}
	if err := s.kill(name); err != nil {
		s.killed.Store(true)
		close(s.dead)
		return errKilled
	}
	return nil
}

// checkpoint seals the epoch in progress and writes it (steps 3 to 4 of
// the contract in stage.go), then moves the watermark and acks its
// batches' waits.
func (s *Stage) checkpoint(ctx context.Context) {
	s.mu.Lock()
	if s.failed.Load() {
		s.mu.Unlock()
		return // the next batch resets first
	}
	cp := s.seal()
	s.mu.Unlock()
	if cp == nil {
		return
	}
	start := time.Now()
	err := s.step("sealed")
	if err == nil {
		err = s.write(ctx, cp)
	}
	if err == nil {
		err = s.step("marked")
	}
	if errors.Is(err, errKilled) {
		return // dead: no ack, no watermark, nothing
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writing = nil
	if err == nil {
		cp.log.free() // every part acked
		s.merge(cp.log)
		for _, ss := range cp.sealed {
			if ss.e != nil { // its encoding is logged: the entry need not keep it (enc, if encoded, is the state's)
				ss.e.sealedEnc = nil
				ss.e.sealing.Store(sealNone)
			}
		}
		// Durable: the sealed states not changed since are clean (the
		// most recently used), and mem may let go of them; those the
		// checkpointer let go of already, it does at once (the log
		// holds them).
		for _, e := range s.sealed {
			e.sealed = false
			switch {
			case e.dirty:
			case e.encoded:
				s.release(e)
			default:
				s.cleaned(e)
			}
		}
		s.shrink()
	}
	s.sealed, s.sealedDrops = nil, nil
	if err != nil {
		s.checkpoints.WithLabelValues("failed").Inc()
		if ctx.Err() == nil {
			s.log.Warn("checkpointing window state failed; applying every batch since the last checkpoint again", "err", err)
		}
		s.toHandAgain += cp.ep.handed
		cp.ep.finish(err)
		s.fail()
		if errors.Is(err, errLogAppend) {
			// STATELOG may be full (a limit, the disk): a compaction
			// purges what the log holds, whether or not it is due.
			s.maybeCompact(true)
		}
		return
	}
	s.checkpoints.WithLabelValues("ok").Inc()
	s.cpSeconds.Observe(time.Since(start).Seconds())
	s.cpStates.Observe(float64(cp.states))
	s.wm.ObserveAt(cp.ep.maxTime, cp.ep.arrived)
	s.count(cp.ep)
	cp.ep.finish(nil)
	select {
	case s.checkpointed <- struct{}{}:
	default:
	}
}

// seal ends the epoch in progress: it encodes every state changed since
// the last seal as it is now, with its timer index changes, and keeps
// them in sealed until the checkpoint is durable. nil if nothing changed.
// Call with mu held.
//
// A checkpoint is written in steps, so a crash may leave any prefix of
// them: the timer key of every armed state (rewritten each time) goes to
// Badger first, then the states to the state log, whose record counts
// whole or not at all, then the deletions (old timer keys), so a crash
// leaves at worst a stale timer key, which FireDue recognises and drops,
// never an armed state without its timer key. Before the record is whole,
// the epoch's matches, handed again, are applied again to the states
// before it and touch every state it changed; after, they are skipped by
// their positions, which the record carries.
func (s *Stage) seal() *checkpoint {
	ep := s.cur
	if ep.batches == 0 && len(s.drops) == 0 {
		return nil
	}
	s.cur = newEpoch(s.now())
	cp := &checkpoint{ep: ep, mark: ep.maxTime, log: &logRecord{seq: s.nextSeq, chunk: s.logChunk, after: s.logTail, applied: ep.positions}, sealed: make([]sealedState, 0, len(s.dirty)), letGo: s.decodedCount() > s.cfg.CacheKeys/2}
	s.nextSeq++
	now := time.Now()
	var timers map[string]struct{}
	sealed := make([]*entry, 0, len(s.dirty))
	for _, e := range s.dirty {
		sk := e.sk
		e.dirty = false
		ttl := s.ttl(e.r)
		deadline := e.deadline()
		if e.indexed != 0 && e.indexed != deadline {
			cp.dels = append(cp.dels, timerKey(e.indexed, sk))
		}
		if deadline != 0 {
			// A timer lives no longer than its state: an orphan left by a
			// state that expired meanwhile goes away by itself.
			k := timerKey(deadline, sk)
			cp.sets = append(cp.sets, badger.NewEntry(k, nil).WithTTL(ttl))
			if timers == nil {
				timers = map[string]struct{}{}
			}
			timers[string(k)] = struct{}{}
		}
		e.indexed = deadline
		if e.empty() {
			if !e.stored {
				// Nothing to write, and nothing stored: the state is no
				// state, which a lookup finds again as well without it.
				s.forgetEntry(e)
				continue
			}
			// Emptied: deleted by this checkpoint. It stays in mem,
			// sealed, until that is durable (Badger and the log still
			// hold it until then).
			cp.sealed = append(cp.sealed, sealedState{sk: sk})
			e.stored = false
		} else if e.encoded {
			// Let go of since it changed (letGoDirty): its encoding is it.
			e.sealedEnc = e.enc
			e.sealing.Store(sealDone)
			cp.sealed = append(cp.sealed, sealedState{sk: sk, e: e, expires: uint64(now.Add(ttl).Unix())})
			e.stored = true
		} else {
			// Encoded by write, outside the mutex (entry.sealedState).
			e.sealing.Store(sealPending)
			cp.sealed = append(cp.sealed, sealedState{sk: sk, e: e, expires: uint64(now.Add(ttl).Unix())})
			e.stored = true
		}
		cp.states++
		e.sealed = true
		sealed = append(sealed, e)
	}
	for k := range s.drops {
		if _, armed := timers[k]; !armed { // dropped as stale, armed again since
			cp.dels = append(cp.dels, []byte(k))
		}
	}
	s.sealed, s.sealedDrops = sealed, s.drops
	s.dirty, s.drops, s.letFrom = make([]*entry, 0, len(sealed)), map[string]struct{}{}, 0
	s.writing = ep
	return cp
}

// write waits for the epoch's alerts' acks, then writes the checkpoint in
// the order seal explains: the timer keys, the record, the deletions, then
// the mark.
func (s *Stage) write(ctx context.Context, cp *checkpoint) error {
	cp.log.keys = make([]string, 0, len(cp.sealed))
	cp.log.states = make([]logState, 0, len(cp.sealed))
	cp.log.begin()
	for _, ss := range cp.sealed {
		var enc []byte
		if ss.e != nil {
			var drop *atomic.Int64
			if cp.letGo {
				drop = &s.encodedN
			}
			enc = ss.e.sealedState(drop)
		}
		cp.log.add(ss.sk, logState{enc: enc, expires: ss.expires})
	}
	for _, wait := range cp.ep.waits {
		if err := wait(ctx); err != nil {
			return err
		}
	}
	if err := s.step("acked"); err != nil {
		return err
	}
	// The timer keys of the armed states first: until the record is
	// complete they are stale ones, which FireDue drops.
	if err := s.writeBatch(cp.sets, nil); err != nil {
		return err
	}
	if err := s.step("sets"); err != nil {
		return err
	}
	// The states and the positions they hold go to the log (log.go): the
	// checkpoint is durable once every part of its record is. A test's
	// kill hook may stop the append halfway: the first half of the
	// record's messages is then appended on its own.
	all := cp.log.parts()
	halves := [][][]byte{all}
	if s.kill != nil {
		halves = [][][]byte{all[:len(all)/2], all[len(all)/2:]}
	}
	from := 0
	for i, half := range halves {
		if i > 0 {
			if err := s.step("half"); err != nil {
				return err
			}
		}
		if err := cp.log.publish(ctx, s.js, s.subject(), half, from, len(all)); err != nil {
			return err
		}
		from += len(half)
	}
	if err := s.step("logged"); err != nil {
		return err
	}
	// Then the old timer keys: a crash before leaves stale ones.
	if err := s.writeBatch(nil, cp.dels); err != nil {
		return err
	}
	if err := s.step("deleted"); err != nil {
		return err
	}
	if cp.mark > 0 {
		err := s.db.Update(func(txn *badger.Txn) error {
			return txn.Set([]byte(markKey), binary.BigEndian.AppendUint64(nil, uint64(cp.mark)))
		})
		if err != nil {
			return fmt.Errorf("writing the watermark mark: %w", err)
		}
	}
	return nil
}

// writeBatch sets sets and deletes dels in one Badger WriteBatch.
func (s *Stage) writeBatch(sets []*badger.Entry, dels [][]byte) error {
	if len(dels)+len(sets) == 0 {
		return nil
	}
	wb := s.db.NewWriteBatch()
	for _, k := range dels {
		if err := wb.Delete(k); err != nil {
			wb.Cancel()
			return fmt.Errorf("writing window state: %w", err)
		}
	}
	for _, e := range sets {
		if err := wb.SetEntry(e); err != nil {
			wb.Cancel()
			return fmt.Errorf("writing window state: %w", err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("writing window state: %w", err)
	}
	return nil
}

// count adds a checkpointed epoch's verdicts to the metrics: counted once,
// when durable, so a batch applied again is not counted twice.
func (s *Stage) count(ep *epoch) {
	for v, n := range ep.verdicts {
		if n > 0 {
			s.verdicts.WithLabelValues(verdictNames[v]).Add(float64(n))
		}
	}
	for v, n := range ep.deadlines {
		if n > 0 {
			s.deadlines.WithLabelValues(verdictNames[v]).Add(float64(n))
		}
	}
	if ep.unknown > 0 {
		s.unknown.Add(float64(ep.unknown))
	}
	if ep.republished > 0 {
		s.republished.Add(float64(ep.republished))
	}
	if ep.redelivered > 0 {
		s.redelivered.Add(float64(ep.redelivered))
	}
	for rule, n := range ep.keyCaps {
		s.keyCap.WithLabelValues(rule).Add(float64(n))
	}
}

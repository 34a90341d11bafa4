package window

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
)

// driveFailing is drive with failed checkpoints: a batch's alerts are
// not acked (fail says which), which fails its epoch's checkpoint (one
// the stage took itself, or the test's); the test then Resets and hands
// again every batch since its last durable Checkpoint, at their positions,
// as the consumer does. It returns how many checkpoints failed.
func driveFailing(ctx context.Context, t *testing.T, s *Stage, batches [][]*event.Match, fail func(i, try int) bool) int {
	t.Helper()
	errAck := errors.New("alert not acked")
	var failing atomic.Bool
	publish := s.publish
	s.publish = func(alerts []*event.Alert) (func(context.Context) error, error) {
		wait, err := publish(alerts)
		if err != nil || !failing.Load() {
			return wait, err
		}
		return func(context.Context) error { return errAck }, nil
	}
	failed, durable := 0, 0
	tries := map[int]int{}
	for i := 0; i < len(batches); i++ {
		failing.Store(fail(i, tries[i]))
		tries[i]++
		_, err := applyBatchAt(ctx, s, uint64(i+1), batches[i])
		failing.Store(false)
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		check := func(when string) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if !s.failed.Load() {
				checkMem(t, s, when)
			}
		}
		check(fmt.Sprintf("after batch %d", i))
		if (i+1)%5 != 0 && i != len(batches)-1 {
			continue
		}
		ok := true
		for range 3 {
			// Checkpoint waits for ever for an epoch of no batch (only
			// timer drops) on a failed stage (it is never sealed): a
			// failed stage is the test's to Reset first.
			if s.failed.Load() {
				ok = false
				break
			}
			if err := s.Checkpoint(ctx); err != nil {
				ok = false
				break
			}
			check(fmt.Sprintf("checkpoint after batch %d", i))
			if _, err := s.expire(ctx); err != nil {
				ok = false
				break
			}
			check(fmt.Sprintf("deadlines after batch %d", i))
		}
		if ok {
			durable = i + 1
			continue
		}
		failed++
		if err := s.Reset(ctx); err != nil {
			t.Fatalf("Reset: %v", err)
		}
		i = durable - 1 // handed again from the first batch not durable
	}
	return failed
}

// A tiny cache (with and without the cold tier, and with a compaction
// after every checkpoint) and one of a third of the keys (with and
// without the cold tier), key caps hit, absence deadlines, and
// checkpoints that fail at random (the stage's own, taken early with half
// the cache dirty, and the test's), each followed by Reset and the
// batches since the last durable checkpoint handed again: the alerts,
// the states and the live keys equal an uninterrupted run's with every
// state in memory. (It lost a batch now and then, and more often when
// slowed down, before apply refused a batch whose wait for the
// checkpoint being written saw that checkpoint fail:
// TestReview11BatchWaitingForAFailingCheckpointIsRefused.)
func TestReview11FailedCheckpointsWithATinyCache(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	batches := crashStream(19, 120)
	capKeys := func(c *Config) { c.MaxKeysPerRule = 18 }

	ref := newCrashRun(t)
	ref.tweak = capKeys
	s, stop := ref.stage(ctx, nil)
	drive(ctx, t, s, batches)
	stop()
	wantIDs, wantStates := ref.ids(), ref.states()
	wantLive := s.liveKeys
	if len(wantIDs) < 20 {
		t.Fatalf("%d alerts: too few to tell anything", len(wantIDs))
	}
	t.Logf("uninterrupted: %d alerts, %d states, live keys %v", len(wantIDs), len(wantStates), wantLive)

	for _, c := range []struct {
		name  string
		tweak func(*Config)
	}{
		{"small", func(c *Config) { capKeys(c); c.CacheKeys, c.CheckpointKeys = 6, 6 }},
		{"cold", func(c *Config) { capKeys(c); c.CacheKeys, c.CheckpointKeys, c.ColdBytes = 6, 6, 4<<10 }},
		{"compacted", func(c *Config) { capKeys(c); c.CacheKeys, c.CheckpointKeys, c.StateLog.Memory = 6, 6, 1 }},
		// A third of the keys: clean states stay, and are let go of.
		{"third", func(c *Config) { capKeys(c); c.CacheKeys, c.CheckpointKeys = 40, 40 }},
		{"third-cold", func(c *Config) { capKeys(c); c.CacheKeys, c.CheckpointKeys, c.ColdBytes = 40, 40, 4<<10 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			for seed := range uint64(3) {
				began := time.Now()
				run := newCrashRun(t)
				run.tweak = c.tweak
				s, stop := run.stage(ctx, nil)
				rng := rand.New(rand.NewPCG(seed, 7))
				failed := driveFailing(ctx, t, s, batches, func(i, try int) bool { return try == 0 && rng.IntN(6) == 0 })
				stop()
				if failed == 0 {
					t.Fatalf("seed %d: no checkpoint failed", seed)
				}
				if got := run.ids(); !slices.Equal(got, wantIDs) {
					for _, id := range wantIDs {
						if !slices.Contains(got, id) {
							t.Logf("missing %s (%s)", id, ref.published[id])
						}
					}
					for _, id := range got {
						if !slices.Contains(wantIDs, id) {
							t.Logf("extra %s (%s)", id, run.published[id])
						}
					}
					t.Errorf("seed %d (%d failed): alerts differ\n got %d: %v\nwant %d: %v", seed, failed, len(got), got, len(wantIDs), wantIDs)
				}
				if got := run.states(); !maps.Equal(got, wantStates) {
					t.Errorf("seed %d (%d failed): %d of %d states differ (%d held)", seed, failed, logStateDiff(t, got, wantStates), len(wantStates), len(got))
				}
				s.mu.Lock()
				live := maps.Clone(s.liveKeys)
				s.mu.Unlock()
				for r, n := range live {
					if n == 0 {
						delete(live, r)
					}
				}
				want := maps.Clone(wantLive)
				for r, n := range want {
					if n == 0 {
						delete(want, r)
					}
				}
				if !maps.Equal(live, want) {
					t.Errorf("seed %d: live keys %v, want %v", seed, live, want)
				}
				t.Logf("seed %d (%s): %d checkpoints failed; reads: %d cold, %d log, %d Badger", seed, time.Since(began), failed, s.coldReads.Load(), s.logReads.Load(), s.badgerReads.Load())
			}
		})
	}
}

// A batch that waits for the checkpoint being written (the whole cache
// dirty) while that checkpoint fails must not be applied once it wakes:
// the stage is failed, and Reset is about to forget every state changed
// since the last durable checkpoint. Applied, its matches are forgotten
// with them but its position stays in the epoch in progress, so handed
// again after Reset it is skipped as held: its matches are lost, and its
// wait returns nil once that epoch is checkpointed, so the consumer acks
// it.
func TestReview11BatchWaitingForAFailingCheckpointIsRefused(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, func(c *Config) { c.CacheKeys, c.CheckpointKeys = 2, 2 })
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	a := []*event.Match{match("many", "a", "a1", at(1)), match("many", "b", "b1", at(1))}
	b := []*event.Match{match("many", "c", "c1", at(2)), match("many", "d", "d1", at(2))}
	c := []*event.Match{match("many", "e", "e1", at(3))}
	ref := newReference(h.s.cfg)
	ref.apply(t, h.set, a...)
	ref.apply(t, h.set, b...)
	ref.apply(t, h.set, c...)
	skE := h.sk(t, "many", "e")
	wantE := ref.state(t, h.set, "many", "e")

	errAck := errors.New("alert not acked")
	gate := make(chan struct{})
	h.pub.then(step{gate: gate, waitErr: errAck}) // a's: its checkpoint fails
	wa, err := applyBatchAt(ctx, h.s, 1, a)
	if err != nil {
		t.Fatal(err)
	}
	cp := h.sealAsync(ctx, t)
	wb, err := applyBatchAt(ctx, h.s, 2, b) // the whole cache dirty again
	if err != nil {
		t.Fatal(err)
	}
	var wc func() error
	applied := background(func() error {
		var err error
		wc, err = applyBatchAt(ctx, h.s, 3, c)
		return err
	})
	pending(t, applied, "a batch with the cache's worth of states dirty during a checkpoint")
	close(gate)
	if err := recv(t, cp, "the checkpoint"); !errors.Is(err, errAck) {
		t.Fatalf("checkpoint: %v, want %v", err, errAck)
	}
	if err := recv(t, applied, "the waiting batch"); err != nil {
		t.Fatalf("the waiting batch: %v", err)
	}
	for what, w := range map[string]func() error{"a": wa, "b": wb} {
		if err := recv(t, background(w), what+"'s wait"); err == nil {
			t.Errorf("%s's wait: nil after its checkpoint failed", what)
		}
	}

	// The consumer resets and hands every batch not acked again, in order.
	h.reset(ctx, t)
	var waits []func() error
	for i, ms := range [][]*event.Match{a, b, c} {
		w, err := applyBatchAt(ctx, h.s, uint64(i+1), ms)
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, w)
	}
	h.checkpoint(ctx, t)
	for i, w := range waits {
		if err := recv(t, background(w), "a wait"); err != nil {
			t.Errorf("batch %d handed again: %v", i, err)
		}
	}
	if err := recv(t, background(wc), "c's first wait"); err == nil {
		t.Errorf("c's first wait: nil, though the stage had failed when it was applied (the consumer acks it)")
	}
	if got := h.stored(t, skE); !bytes.Equal(got, wantE) {
		t.Errorf("Badger holds %x for host=e after c was handed again, want %x (c's match lost)", got, wantE)
	}
}

// checkMem fails t unless the states in memory are consistent: every
// entry of mem under its own key, dirty (in dirty), sealed (in sealed) or
// else on the clean list, once; the clean list well linked, of entries
// of mem only; no state both in mem and in cold; mem over cache_keys only
// while no clean state is left to let go of; every state counted live
// exactly when it is not empty. Call with mu held, the stage not failed
// (until Reset, memory is to be forgotten).
func checkMem(t *testing.T, s *Stage, when string) {
	t.Helper()
	inDirty, inSealed, onList := map[*entry]bool{}, map[*entry]bool{}, map[*entry]bool{}
	for _, e := range s.dirty {
		if inDirty[e] || !e.dirty || s.mem[e.sk] != e {
			t.Fatalf("%s: %q in dirty twice (%v), not flagged dirty (%v), or not mem's (%v)", when, e.sk, inDirty[e], !e.dirty, s.mem[e.sk] != e)
		}
		inDirty[e] = true
	}
	for _, e := range s.sealed {
		if inSealed[e] || !e.sealed || s.mem[e.sk] != e {
			t.Fatalf("%s: %q in sealed twice (%v), not flagged sealed (%v), or not mem's (%v)", when, e.sk, inSealed[e], !e.sealed, s.mem[e.sk] != e)
		}
		inSealed[e] = true
	}
	prev := &s.clean
	for e := s.clean.next; e != &s.clean; e = e.next {
		if e == nil || e.prev != prev || onList[e] || len(onList) > len(s.mem) {
			t.Fatalf("%s: the clean list is broken", when)
		}
		if e.dirty || e.sealed || s.mem[e.sk] != e {
			t.Fatalf("%s: %q on the clean list: dirty %v, sealed %v, mem's %v", when, e.sk, e.dirty, e.sealed, s.mem[e.sk] == e)
		}
		onList[e] = true
		prev = e
	}
	if s.clean.prev != prev {
		t.Fatalf("%s: the clean list's sentinel does not end at its last entry", when)
	}
	encoded := 0
	for sk, e := range s.mem {
		if e.sk != sk {
			t.Fatalf("%s: mem holds %q under %q", when, e.sk, sk)
		}
		if e.dirty != inDirty[e] || e.sealed != inSealed[e] || onList[e] == (e.dirty || e.sealed) {
			t.Fatalf("%s: %q flagged dirty %v sealed %v, in dirty %v, in sealed %v, on the clean list %v", when, sk, e.dirty, e.sealed, inDirty[e], inSealed[e], onList[e])
		}
		if e.sealing.Load() != sealNone {
			// Sealed: the checkpointer may be encoding it, and let go of
			// it then; once sealedState returns it is done with it.
			e.sealedState(nil)
		}
		empty := e.st.Empty()
		if e.encoded {
			encoded++
			var st engine.State
			if err := engine.DecodeState(e.enc, &st); err != nil {
				t.Fatalf("%s: %q let go of, unreadable: %v", when, sk, err)
			}
			if empty = st.Empty(); empty != e.encEmpty {
				t.Fatalf("%s: %q let go of, empty %v, flagged %v", when, sk, empty, e.encEmpty)
			}
		}
		if e.live == empty {
			t.Fatalf("%s: %q live %v, empty %v", when, sk, e.live, empty)
		}
		if _, ok := s.cold[sk]; ok {
			t.Fatalf("%s: %q both in mem and in cold", when, sk)
		}
	}
	if n := s.encodedN.Load(); n != int64(encoded) {
		t.Fatalf("%s: %d states let go of, counted %d", when, encoded, n)
	}
	if n := s.memN.Load(); n != int64(len(s.mem)) {
		t.Fatalf("%s: %d states in memory, counted %d", when, len(s.mem), n)
	}
	if s.decodedCount() > s.cfg.CacheKeys && len(onList) > 0 {
		t.Fatalf("%s: mem holds %d states decoded, more than %d, and %d clean ones", when, s.decodedCount(), s.cfg.CacheKeys, len(onList))
	}
}

// An orphan timer (its state gone: expired by TTL, or never written)
// makes the deadline check read a state that is not stored and leave it
// empty: the checkpoint that drops the timer lets go of it (memory
// holds it in no list), and the memory stays consistent; while a key cap
// is full, a new key's empty state a match was refused for goes the same
// way, and the key cap counts the stored keys only.
func TestReview11EmptyStatesLeaveMemory(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, absenceRule+thresholdRule, func(c *Config) { c.CacheKeys, c.CheckpointKeys, c.MaxKeysPerRule = 3, 3, 1 })
	skZ, skB := h.sk(t, "silent", "z"), h.sk(t, "many", "b")
	h.commit(ctx, t, match("silent", "a", "a1", t0), match("many", "a", "a1", t0))
	at := t0.Add(-time.Hour)
	if err := h.s.db.Update(func(txn *badger.Txn) error { return txn.Set(timerKey(at.UnixNano(), skZ), nil) }); err != nil {
		t.Fatal(err)
	}
	h.setWatermark(t, t0.Add(10*time.Minute)) // before host=a's deadline
	h.expireOK(ctx, t)
	h.locked(func() {
		// The stage's own checkpointer (due with a timer to drop) may
		// have let go of it already.
		if e := h.s.mem[skZ]; e != nil && (!e.dirty || !e.st.Empty() || e.stored) {
			t.Fatalf("host=z after the deadline check: %+v, want its empty state dirty in memory, or gone", e)
		}
		checkMem(t, h.s, "after the deadline check")
	})
	// host=b of many: over the key cap, refused (its state read, not kept).
	h.mustApply(ctx, t, match("many", "b", "b1", t0))
	h.checkpoint(ctx, t)
	h.locked(func() {
		if e := h.s.mem[skZ]; e != nil {
			t.Errorf("host=z, empty, still in memory after the checkpoint: %+v", e)
		}
		if e := h.s.mem[skB]; e != nil {
			t.Errorf("host=b, refused by the key cap, in memory: %+v", e)
		}
		checkMem(t, h.s, "after the checkpoint")
	})
	if got := h.timers(t); len(got) != 1 || got[0].sk != h.sk(t, "silent", "a") {
		t.Errorf("timer index %v, want host=a's only", got)
	}
	if got := h.liveKeys(); got["silent"] != 1 || got["many"] != 1 {
		t.Errorf("live keys %v, want one of each rule", got)
	}
	if got := h.badgerStates(t); len(got) != 2 {
		t.Errorf("Badger holds %d states, want 2", len(got))
	}
}

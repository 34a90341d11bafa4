package window

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/bus/bustest"
	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
)

// The checkpoint tests (stage.go's package comment), on the harness of
// harness_test.go: the states change in memory at apply, which publishes
// the alerts; a checkpoint, when the test asks for one, writes them to
// Badger with the timer index and then the mark, and only then moves the
// watermark and releases the batches' waits. A failure fails every batch
// since the last checkpoint until Reset, after which the same batches,
// handed again in order, give what an uninterrupted run gives.

// never is the time of a mark or watermark not yet set.
var never = time.Unix(0, 0).UTC()

// mustApply applies ms as one batch and fails t if apply does.
func (h *harness) mustApply(ctx context.Context, t *testing.T, ms ...*event.Match) func() error {
	t.Helper()
	wait, err := h.apply(ctx, ms...)
	if err != nil {
		t.Fatal(err)
	}
	return wait
}

// checkpointAsync calls Checkpoint in the background; what it hands back
// is what Checkpoint returned. Checkpoint waits for the epoch in progress
// when it runs, so nothing may be applied until it returned: sealAsync is
// for that.
func (h *harness) checkpointAsync(ctx context.Context) <-chan error {
	return background(func() error { return h.s.Checkpoint(ctx) })
}

// checkpoint asks for a checkpoint now and fails t unless it is durable.
func (h *harness) checkpoint(ctx context.Context, t *testing.T) {
	t.Helper()
	if err := recv(t, h.checkpointAsync(ctx), "the checkpoint"); err != nil {
		t.Fatal(err)
	}
}

// sealAsync asks for a checkpoint of the batches applied so far, as
// Checkpoint does, and returns once the checkpointer sealed them and is
// writing them (the test holds their alerts' acks); what it hands back is
// what became of that checkpoint, whatever is applied after.
func (h *harness) sealAsync(ctx context.Context, t *testing.T) <-chan error {
	t.Helper()
	var ep *epoch
	h.locked(func() {
		if ep = h.s.cur; ep.batches == 0 {
			ep = h.s.writing // sealed already, on the stage's own request
		}
	})
	if ep == nil {
		t.Fatal("no batch to seal")
	}
	h.s.requestCheckpoint()
	waitFor(ctx, t, "the checkpoint sealed and being written", func() bool {
		var ok bool
		h.locked(func() { ok = h.s.writing == ep })
		return ok
	})
	return background(func() error {
		select {
		case <-ep.done:
			return ep.err
		case <-ctx.Done():
			return ctx.Err()
		}
	})
}

// watermark is the stage's watermark now.
func (h *harness) watermark() time.Time {
	var at int64
	h.locked(func() { at = h.s.Watermark() })
	return time.Unix(0, at).UTC()
}

// setWatermark moves the clock so far ahead that the watermark, idle,
// follows it to at.
func (h *harness) setWatermark(t *testing.T, at time.Time) {
	t.Helper()
	h.clock.set(at.Add(h.s.cfg.AllowedLateness))
	if got := h.watermark(); !got.Equal(at) {
		t.Fatalf("watermark %s, want %s", got, at)
	}
}

func (h *harness) isFailed() bool { return h.s.failed.Load() }

func (h *harness) reset(ctx context.Context, t *testing.T) {
	t.Helper()
	if err := recv(t, background(func() error { return h.s.Reset(ctx) }), "Reset"); err != nil {
		t.Fatal(err)
	}
}

// expireOK checks the deadlines once and fails t if that fails.
func (h *harness) expireOK(ctx context.Context, t *testing.T) {
	t.Helper()
	if err := recv(t, background(func() error { return h.expire(ctx) }), "expire"); err != nil {
		t.Fatal(err)
	}
}

// badgerStates is every window state Badger holds, encoded, by key.
func (h *harness) badgerStates(t *testing.T) map[string]string {
	return storedStates(t, h.s.db, h.s.js)
}

// Two epochs touching one key. The second batch of an epoch sees the
// first's state in memory; nothing reaches Badger, the mark or the
// watermark before the checkpoint, and the verdicts are not counted yet;
// the batches' waits hold until it is durable. The next epoch's batch
// raises the alert at apply, with the id the engine gives the matches in
// one go, on the state in memory while Badger still holds the first
// checkpoint's; its checkpoint writes the reference's state and moves the
// mark and the watermark.
func TestEpochsShareStateInMemoryAndCheckpointTogether(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, nil)
	lateness := h.s.cfg.AllowedLateness
	sk := h.sk(t, "many", "a")
	m1, m2 := match("many", "a", "e1", t0.Add(time.Second)), match("many", "a", "e2", t0.Add(2*time.Second))
	m3, m4 := match("many", "a", "e3", t0.Add(3*time.Second)), match("many", "a", "e4", t0.Add(4*time.Second))
	ref := newReference(h.s.cfg)
	ref.apply(t, h.set, m1)
	afterM1 := ref.state(t, h.set, "many", "a")
	if ids := ref.apply(t, h.set, m2); len(ids) != 0 {
		t.Fatalf("reference fired %v on two matches", ids)
	}
	afterM2 := ref.state(t, h.set, "many", "a")
	wantIDs := ref.apply(t, h.set, m3)
	if len(wantIDs) != 1 {
		t.Fatalf("reference fired %v, want one alert", wantIDs)
	}
	afterM3 := ref.state(t, h.set, "many", "a")
	if ids := ref.apply(t, h.set, m4); len(ids) != 0 {
		t.Fatalf("reference fired %v on a fourth match", ids)
	}
	final := ref.state(t, h.set, "many", "a")

	// Epoch 1: two batches.
	w1 := h.mustApply(ctx, t, m1)
	if got := h.inMemory(sk); !bytes.Equal(got, afterM1) {
		t.Fatalf("memory after batch 1: %x, want %x", got, afterM1)
	}
	w2 := h.mustApply(ctx, t, m2)
	if got := h.inMemory(sk); !bytes.Equal(got, afterM2) {
		t.Fatalf("memory after batch 2: %x, want %x (batch 2 must see batch 1's state)", got, afterM2)
	}
	if v := h.stored(t, sk); v != nil {
		t.Errorf("Badger holds %x before any checkpoint", v)
	}
	if got := h.mark(t); !got.Equal(never) {
		t.Errorf("mark %s before any checkpoint", got)
	}
	if got := h.watermark(); !got.Equal(never) {
		t.Errorf("watermark %s before any checkpoint, want none", got)
	}
	if c := h.verdict("counted"); c != 0 {
		t.Errorf("verdicts counted %v before the checkpoint, want 0", c)
	}
	if got := h.liveKeys()["many"]; got != 1 {
		t.Errorf("live keys of many %d, want 1", got)
	}
	h.locked(func() {
		if h.s.cur.batches != 2 || len(h.s.dirty) != 1 {
			t.Errorf("epoch of %d batches with %d dirty states, want 2 and 1", h.s.cur.batches, len(h.s.dirty))
		}
	})
	c1, c2 := background(w1), background(w2)
	pending(t, c1, "batch 1's wait")
	pending(t, c2, "batch 2's wait")
	h.checkpoint(ctx, t)
	for i, c := range []<-chan error{c1, c2} {
		if err := recv(t, c, "a wait"); err != nil {
			t.Errorf("batch %d: %v", i+1, err)
		}
	}
	if got := h.stored(t, sk); !bytes.Equal(got, afterM2) {
		t.Errorf("Badger after checkpoint 1: %x, want %x", got, afterM2)
	}
	if got, want := h.mark(t), m2.Time; !got.Equal(want) {
		t.Errorf("mark after checkpoint 1 %s, want %s", got, want)
	}
	if got, want := h.watermark(), m2.Time.Add(-lateness); !got.Equal(want) {
		t.Errorf("watermark after checkpoint 1 %s, want %s", got, want)
	}
	if c := h.verdict("counted"); c != 2 {
		t.Errorf("verdicts counted %v after checkpoint 1, want 2", c)
	}

	// Epoch 2: the alert is published at apply, before any checkpoint.
	w3 := h.mustApply(ctx, t, m3)
	if calls, ids := h.pub.published(); calls != 3 || !slices.Equal(ids, wantIDs) {
		t.Fatalf("%d publish calls with alerts %v, want 3 calls with %v", calls, ids, wantIDs)
	}
	if got := h.inMemory(sk); !bytes.Equal(got, afterM3) {
		t.Errorf("memory after batch 3: %x, want %x", got, afterM3)
	}
	w4 := h.mustApply(ctx, t, m4)
	if got := h.inMemory(sk); !bytes.Equal(got, final) {
		t.Errorf("memory after batch 4: %x, want %x", got, final)
	}
	if got := h.stored(t, sk); !bytes.Equal(got, afterM2) {
		t.Errorf("Badger before checkpoint 2: %x, want checkpoint 1's %x", got, afterM2)
	}
	if got, want := h.watermark(), m2.Time.Add(-lateness); !got.Equal(want) {
		t.Errorf("watermark before checkpoint 2 %s, want still %s", got, want)
	}
	if got := h.pub.ackedIDs(); len(got) != 0 {
		t.Errorf("acked alerts %v before checkpoint 2", got)
	}
	c3, c4 := background(w3), background(w4)
	pending(t, c3, "batch 3's wait")
	h.checkpoint(ctx, t)
	for i, c := range []<-chan error{c3, c4} {
		if err := recv(t, c, "a wait"); err != nil {
			t.Errorf("batch %d: %v", i+3, err)
		}
	}
	if got := h.stored(t, sk); !bytes.Equal(got, final) {
		t.Errorf("Badger after checkpoint 2: %x, want %x", got, final)
	}
	if got, want := h.mark(t), m4.Time; !got.Equal(want) {
		t.Errorf("mark after checkpoint 2 %s, want %s", got, want)
	}
	if got, want := h.watermark(), m4.Time.Add(-lateness); !got.Equal(want) {
		t.Errorf("watermark after checkpoint 2 %s, want %s", got, want)
	}
	if got := h.pub.ackedIDs(); !slices.Equal(got, wantIDs) {
		t.Errorf("acked alerts %v, want %v", got, wantIDs)
	}
	if c, f := h.verdict("counted"), h.verdict("fired"); c != 3 || f != 1 {
		t.Errorf("verdicts counted %v fired %v, want 3 and 1", c, f)
	}
	h.locked(func() {
		if len(h.s.dirty) != 0 || h.s.sealed != nil || h.s.writing != nil {
			t.Errorf("after the checkpoint: %d dirty, sealed %v, writing %v; want nothing pending", len(h.s.dirty), h.s.sealed != nil, h.s.writing != nil)
		}
		// A fresh batch reads the final state: from the cache, then (the
		// cache emptied) decoded from Badger.
		for _, from := range []string{"cache", "Badger"} {
			if from == "Badger" {
				h.s.letGo(sk)
			}
			b := h.s.newBatch()
			st, err := b.State(h.rule(t, "many"), "host=a", true)
			b.discard()
			if err != nil {
				t.Fatal(err)
			}
			if got := engine.AppendState(nil, st); !bytes.Equal(got, final) {
				t.Errorf("a fresh batch reads %x from the %s, want %x", got, from, final)
			}
		}
		h.s.letGo(sk)
	})
}

// An alert whose ack fails fails its checkpoint: every batch of the epoch
// returns that error, and a batch applied while the checkpoint was being
// written errEarlierFailed. Nothing of them reaches Badger, the mark, the
// watermark or the metrics; apply and expire refuse until Reset, which
// drops the states in memory. Handed again in order, the batches give the
// same alert, with the same id, and the reference's state, counted once.
func TestFailedAlertAckFailsTheEpochUntilReset(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, nil)
	lateness := h.s.cfg.AllowedLateness
	sk := h.sk(t, "many", "a")
	m1, m2 := match("many", "a", "e1", t0.Add(time.Second)), match("many", "a", "e2", t0.Add(2*time.Second))
	m3, m4 := match("many", "a", "e3", t0.Add(3*time.Second)), match("many", "a", "e4", t0.Add(4*time.Second))
	ref := newReference(h.s.cfg)
	ref.apply(t, h.set, m1)
	afterM1 := ref.state(t, h.set, "many", "a")
	wantIDs := ref.apply(t, h.set, m2, m3, m4)
	if len(wantIDs) != 1 {
		t.Fatalf("reference fired %v, want one alert", wantIDs)
	}
	final := ref.state(t, h.set, "many", "a")

	h.commit(ctx, t, m1)
	gate := make(chan struct{})
	errAck := errors.New("alert not acked: stream full")
	h.pub.then(step{})                            // m2's batch
	h.pub.then(step{gate: gate, waitErr: errAck}) // m3's: the alert
	c2 := background(h.mustApply(ctx, t, m2))
	c3 := background(h.mustApply(ctx, t, m3))
	if _, ids := h.pub.published(); !slices.Equal(ids, wantIDs) {
		t.Fatalf("published %v, want %v", ids, wantIDs)
	}
	cp := h.sealAsync(ctx, t)
	c4 := background(h.mustApply(ctx, t, m4)) // the next epoch
	pending(t, cp, "the checkpoint (its alert's ack is held)")
	close(gate)
	if err := recv(t, cp, "the checkpoint"); !errors.Is(err, errAck) {
		t.Fatalf("checkpoint returned %v, want %v", err, errAck)
	}
	for i, c := range []<-chan error{c2, c3} {
		if err := recv(t, c, "a wait"); !errors.Is(err, errAck) {
			t.Errorf("batch %d's wait: %v, want %v", i+2, err, errAck)
		}
	}
	if err := recv(t, c4, "batch 4's wait"); !errors.Is(err, errEarlierFailed) {
		t.Errorf("batch 4 (applied during the failed checkpoint): %v, want errEarlierFailed", err)
	}
	if !h.isFailed() {
		t.Fatal("the stage does not know the checkpoint failed")
	}
	if got := h.stored(t, sk); !bytes.Equal(got, afterM1) {
		t.Errorf("Badger after the failure: %x, want the last checkpoint's %x", got, afterM1)
	}
	if got, want := h.mark(t), m1.Time; !got.Equal(want) {
		t.Errorf("mark %s, want the last checkpoint's %s", got, want)
	}
	if got, want := h.watermark(), m1.Time.Add(-lateness); !got.Equal(want) {
		t.Errorf("watermark %s after the failure, want %s", got, want)
	}
	if got := h.pub.ackedIDs(); len(got) != 0 {
		t.Errorf("acked alerts %v, want none", got)
	}
	if c, f := h.verdict("counted"), h.verdict("fired"); c != 1 || f != 0 {
		t.Errorf("verdicts counted %v fired %v after the failure, want the first checkpoint's 1 and 0", c, f)
	}

	// Until Reset, every batch fails and changes nothing.
	calls, _ := h.pub.published()
	before := h.inMemory(sk)
	wait, err := h.apply(ctx, m2)
	if err != nil {
		t.Fatalf("apply before Reset: %v, want a wait that fails", err)
	}
	if err := recv(t, background(wait), "a refused batch's wait"); !errors.Is(err, errEarlierFailed) {
		t.Errorf("a batch applied before Reset: %v, want errEarlierFailed", err)
	}
	if n, _ := h.pub.published(); n != calls {
		t.Errorf("a refused batch published (%d calls, want %d)", n, calls)
	}
	if got := h.inMemory(sk); !bytes.Equal(got, before) {
		t.Errorf("a refused batch changed the state in memory: %x, was %x", got, before)
	}
	if err := h.expire(ctx); !errors.Is(err, errEarlierFailed) {
		t.Errorf("expire before Reset: %v, want errEarlierFailed", err)
	}

	h.reset(ctx, t)
	if h.isFailed() {
		t.Fatal("still failed after Reset")
	}
	if got := h.inMemory(sk); got != nil {
		t.Errorf("memory holds %x after Reset, want nothing (Badger is the truth)", got)
	}
	if got := h.liveKeys()["many"]; got != 1 {
		t.Errorf("live keys of many %d after Reset, want 1", got)
	}
	// Handed again, oldest first, one at a time, each waited for before
	// the next (as bus.ConsumeAsync retries).
	for _, m := range []*event.Match{m2, m3, m4} {
		h.commit(ctx, t, m)
	}
	if _, ids := h.pub.published(); !slices.Equal(ids, append(slices.Clone(wantIDs), wantIDs...)) {
		t.Errorf("published %v, want %v twice (same id: JetStream drops the duplicate)", ids, wantIDs)
	}
	if got := h.pub.ackedIDs(); !slices.Equal(got, wantIDs) {
		t.Errorf("acked alerts %v, want %v", got, wantIDs)
	}
	if got := h.stored(t, sk); !bytes.Equal(got, final) {
		t.Errorf("Badger after the retry: %x, want %x", got, final)
	}
	if got, want := h.mark(t), m4.Time; !got.Equal(want) {
		t.Errorf("mark after the retry %s, want %s", got, want)
	}
	if got := h.liveKeys()["many"]; got != 1 {
		t.Errorf("live keys of many %d, want 1", got)
	}
	if c, f, d := h.verdict("counted"), h.verdict("fired"), h.verdict("duplicate"); c != 3 || f != 1 || d != 0 {
		t.Errorf("verdicts counted %v fired %v duplicate %v, want 3, 1 and 0", c, f, d)
	}
}

// A publish that fails at apply fails the batch at once, and with it the
// batches of its epoch not yet checkpointed; the epoch already sealed
// (being written) still lands, and Reset waits for it. Handed again in
// order after Reset, the batches give the reference's alerts and states;
// handed yet again once durable (a crash between the checkpoint and the
// ack), they are duplicates: nothing changes and nothing is raised.
func TestPublishErrorFailsTheEpoch(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, nil)
	lateness := h.s.cfg.AllowedLateness
	skA, skB := h.sk(t, "many", "a"), h.sk(t, "many", "b")
	m1, m2 := match("many", "a", "e1", t0.Add(time.Second)), match("many", "a", "e2", t0.Add(2*time.Second))
	m3, mb := match("many", "a", "e3", t0.Add(3*time.Second)), match("many", "b", "eb", t0.Add(5*time.Second))
	ref := newReference(h.s.cfg)
	ref.apply(t, h.set, m1)
	afterM1 := ref.state(t, h.set, "many", "a")
	wantIDs := ref.apply(t, h.set, m2, m3, mb)
	if len(wantIDs) != 1 {
		t.Fatalf("reference fired %v, want one alert", wantIDs)
	}

	gate := make(chan struct{})
	errPub := errors.New("nats: connection closed")
	h.pub.then(step{gate: gate})  // m1: its checkpoint is being written during the failure
	h.pub.then(step{})            // m2
	h.pub.then(step{err: errPub}) // m3 and mb
	c1 := background(h.mustApply(ctx, t, m1))
	cp := h.sealAsync(ctx, t)
	c2 := background(h.mustApply(ctx, t, m2))
	if wait, err := h.apply(ctx, m3, mb); !errors.Is(err, errPub) || wait != nil {
		t.Fatalf("apply with a failing publish: wait %v, err %v; want no wait and %v", wait != nil, err, errPub)
	}
	if err := recv(t, c2, "batch 2's wait"); !errors.Is(err, errEarlierFailed) {
		t.Errorf("batch 2 (same epoch as the failed one): %v, want errEarlierFailed", err)
	}
	if !h.isFailed() {
		t.Fatal("the stage does not know the batch failed")
	}
	pending(t, c1, "batch 1's wait (its checkpoint was sealed before the failure)")
	h.locked(func() {
		if got, want := time.Unix(0, h.s.newestApplied()).UTC(), m1.Time; !got.Equal(want) {
			t.Errorf("newest applied %s, want %s (the failed epoch's must not count)", got, want)
		}
	})
	if wait, err := h.apply(ctx, m2); err != nil || wait == nil {
		t.Errorf("apply before Reset: %v; want a wait that fails", err)
	} else if err := wait(); !errors.Is(err, errEarlierFailed) {
		t.Errorf("a batch applied before Reset: %v, want errEarlierFailed", err)
	}

	rs := background(func() error { return h.s.Reset(ctx) })
	pending(t, rs, "Reset (a checkpoint is being written)")
	close(gate)
	if err := recv(t, cp, "the checkpoint"); err != nil {
		t.Errorf("the checkpoint sealed before the failure: %v", err)
	}
	if err := recv(t, c1, "batch 1's wait"); err != nil {
		t.Errorf("batch 1: %v", err)
	}
	if err := recv(t, rs, "Reset"); err != nil {
		t.Fatal(err)
	}
	if got := h.stored(t, skA); !bytes.Equal(got, afterM1) {
		t.Errorf("Badger holds %x for host=a, want %x", got, afterM1)
	}
	if got := h.stored(t, skB); got != nil {
		t.Errorf("Badger holds %x for host=b, from a failed batch", got)
	}
	if got, want := h.mark(t), m1.Time; !got.Equal(want) {
		t.Errorf("mark %s, want %s", got, want)
	}
	if got, want := h.watermark(), m1.Time.Add(-lateness); !got.Equal(want) {
		t.Errorf("watermark %s, want %s", got, want)
	}
	if got := h.liveKeys()["many"]; got != 1 {
		t.Errorf("live keys of many %d after Reset, want Badger's 1", got)
	}
	if c := h.verdict("counted"); c != 1 {
		t.Errorf("verdicts counted %v, want 1", c)
	}

	h.commit(ctx, t, m2)
	h.commit(ctx, t, m3, mb)
	if _, ids := h.pub.published(); !slices.Equal(ids, append(slices.Clone(wantIDs), wantIDs...)) {
		t.Errorf("published %v, want %v twice (the failed publish and the retry)", ids, wantIDs)
	}
	if got := h.pub.ackedIDs(); !slices.Equal(got, wantIDs) {
		t.Errorf("acked alerts %v, want %v", got, wantIDs)
	}
	for _, host := range []string{"a", "b"} {
		if got, want := h.stored(t, h.sk(t, "many", host)), ref.state(t, h.set, "many", host); !bytes.Equal(got, want) {
			t.Errorf("Badger holds %x for host=%s, want %x", got, host, want)
		}
	}
	if got := h.liveKeys()["many"]; got != 2 {
		t.Errorf("live keys of many %d, want 2", got)
	}
	if got, want := h.mark(t), mb.Time; !got.Equal(want) {
		t.Errorf("mark %s, want %s", got, want)
	}
	if c, f, d := h.verdict("counted"), h.verdict("fired"), h.verdict("duplicate"); c != 3 || f != 1 || d != 0 {
		t.Errorf("verdicts counted %v fired %v duplicate %v, want 3, 1 and 0", c, f, d)
	}

	// Once more, after it is durable: duplicates.
	states := h.badgerStates(t)
	h.commit(ctx, t, m3, mb)
	if _, ids := h.pub.published(); len(ids) != 2 {
		t.Errorf("published %v after a redelivery of a durable batch, want nothing new", ids)
	}
	if got := h.badgerStates(t); !maps.Equal(got, states) {
		t.Errorf("a redelivery of a durable batch changed Badger's states")
	}
	if c, f, d := h.verdict("counted"), h.verdict("fired"), h.verdict("duplicate"); c != 3 || f != 1 || d != 2 {
		t.Errorf("verdicts counted %v fired %v duplicate %v, want 3, 1 and 2", c, f, d)
	}
}

// An absence deadline is indexed in Badger (t/) by the checkpoint that
// makes its state durable, not before, and moving it replaces its timer
// key. expire fires it once the watermark passes it, at once (the alert
// is published then), and fires it once however often it runs before the
// checkpoint that deletes its timer key. CheckDeadlines fires a deadline
// the watermark passed — not one it reached — and returns once durable.
func TestAbsenceTimerIndexIsWrittenAtCheckpoint(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, absenceRule, nil)
	lateness := h.s.cfg.AllowedLateness
	set := h.set
	skA, skB := h.sk(t, "silent", "a"), h.sk(t, "silent", "b")
	ref := newReference(h.s.cfg)

	a1 := match("silent", "a", "a1", t0)
	dA := a1.Time.Add(30 * time.Minute)
	wait := h.mustApply(ctx, t, a1)
	ref.apply(t, set, a1)
	if got := h.timers(t); len(got) != 0 {
		t.Fatalf("timer index %v before the checkpoint, want empty", got)
	}
	h.checkpoint(ctx, t)
	if err := recv(t, background(wait), "the wait"); err != nil {
		t.Fatal(err)
	}
	if got, want := h.timers(t), []timer{{dA, skA}}; !slices.Equal(got, want) {
		t.Fatalf("timer index %v, want %v", got, want)
	}
	h.expireOK(ctx, t)
	if calls, _ := h.pub.published(); calls != 1 {
		t.Fatalf("%d publish calls; expire with nothing due must not publish", calls)
	}

	// host=b's match moves the watermark 1s past host=a's deadline.
	b1 := match("silent", "b", "b1", dA.Add(lateness+time.Second))
	dB := b1.Time.Add(30 * time.Minute)
	h.commit(ctx, t, b1)
	ref.apply(t, set, b1)
	if got, want := h.watermark(), dA.Add(time.Second); !got.Equal(want) {
		t.Fatalf("watermark %s, want %s", got, want)
	}
	wantA := ref.fire(t, set, h.watermark())
	if len(wantA) != 1 {
		t.Fatalf("reference fired %v, want one alert", wantA)
	}
	h.expireOK(ctx, t)
	if _, ids := h.pub.published(); !slices.Equal(ids, wantA) {
		t.Fatalf("published %v, want host=a's silence %v", ids, wantA)
	}
	if got, want := h.timers(t), []timer{{dA, skA}, {dB, skB}}; !slices.Equal(got, want) {
		t.Errorf("timer index before the checkpoint %v, want %v (unchanged)", got, want)
	}
	h.expireOK(ctx, t)
	if _, ids := h.pub.published(); !slices.Equal(ids, wantA) {
		t.Errorf("published %v after a second expire, want %v (fired once)", ids, wantA)
	}
	h.checkpoint(ctx, t)
	if got, want := h.timers(t), []timer{{dB, skB}}; !slices.Equal(got, want) {
		t.Errorf("timer index after the checkpoint %v, want only host=b's %v", got, want)
	}
	if got, want := h.stored(t, skA), ref.state(t, set, "silent", "a"); !bytes.Equal(got, want) {
		t.Errorf("Badger holds %x for host=a after firing, want %x", got, want)
	}
	if got := h.pub.ackedIDs(); !slices.Equal(got, wantA) {
		t.Errorf("acked alerts %v, want %v", got, wantA)
	}
	// A deadline fired is not a match: the windows' matches stay the
	// filter's (two, counted), and the deadline is counted apart.
	if c, f, d := h.verdict("counted"), h.verdict("fired"), testutil.ToFloat64(h.s.deadlines.WithLabelValues("fired")); c != 2 || f != 0 || d != 1 {
		t.Errorf("matches counted %v, fired %v; deadlines fired %v: want 2, 0 and 1", c, f, d)
	}

	// The watermark reaches host=b's deadline: nothing; passes it: fired.
	h.setWatermark(t, dB)
	if err := h.s.CheckDeadlines(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ids := h.pub.published(); !slices.Equal(ids, wantA) {
		t.Fatalf("published %v with the watermark at host=b's deadline, want only %v", ids, wantA)
	}
	h.setWatermark(t, dB.Add(time.Second))
	wantB := ref.fire(t, set, dB.Add(time.Second))
	if len(wantB) != 1 {
		t.Fatalf("reference fired %v, want one alert", wantB)
	}
	if err := h.s.CheckDeadlines(ctx); err != nil {
		t.Fatal(err)
	}
	want := append(slices.Clone(wantA), wantB...)
	if _, ids := h.pub.published(); !slices.Equal(ids, want) {
		t.Errorf("published %v, want %v", ids, want)
	}
	if got := h.pub.ackedIDs(); !slices.Equal(got, want) {
		t.Errorf("acked alerts %v once CheckDeadlines returned, want %v", got, want)
	}
	if got := h.timers(t); len(got) != 0 {
		t.Errorf("timer index %v once CheckDeadlines returned, want empty", got)
	}
	if got, want := h.stored(t, skB), ref.state(t, set, "silent", "b"); !bytes.Equal(got, want) {
		t.Errorf("Badger holds %x for host=b, want %x", got, want)
	}
}

// Stale timers, on the clock's idle advance: host=a's deadline moves from
// d1 to d2 (the checkpoint replaces its timer key); an orphan key at d1
// (its delete lost) is dropped, not fired, once the watermark passes d1,
// and deleted by the next checkpoint. Then a3 moves the deadline to d3 and
// its checkpoint is being written (its acks held) when the watermark
// passes d2: expire sees the state in memory (d3), not Badger's index
// (d2), and fires nothing. Once the watermark passes d3, the silence
// fires with the engine's id and the index empties.
func TestStaleTimerIsDroppedNotFired(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, absenceRule, nil)
	set := h.set
	sk := h.sk(t, "silent", "a")
	ref := newReference(h.s.cfg)

	a1, a2, a3 := match("silent", "a", "a1", t0), match("silent", "a", "a2", t0.Add(20*time.Minute)), match("silent", "a", "a3", t0.Add(25*time.Minute))
	d1, d2, d3 := a1.Time.Add(30*time.Minute), a2.Time.Add(30*time.Minute), a3.Time.Add(30*time.Minute)
	h.commit(ctx, t, a1)
	h.commit(ctx, t, a2)
	ref.apply(t, set, a1, a2)
	if got, want := h.timers(t), []timer{{d2, sk}}; !slices.Equal(got, want) {
		t.Fatalf("timer index %v, want %v (the moved deadline's key replaced)", got, want)
	}
	if err := h.s.db.Update(func(txn *badger.Txn) error { return txn.Set(timerKey(d1.UnixNano(), sk), nil) }); err != nil {
		t.Fatal(err)
	}
	h.setWatermark(t, d1.Add(time.Minute))
	h.expireOK(ctx, t)
	if _, ids := h.pub.published(); len(ids) != 0 {
		t.Fatalf("a stale timer fired %v", ids)
	}
	if got, want := h.timers(t), []timer{{d1, sk}, {d2, sk}}; !slices.Equal(got, want) {
		t.Errorf("timer index %v before the checkpoint, want %v (the drop waits for it)", got, want)
	}
	calls, _ := h.pub.published()
	h.expireOK(ctx, t)
	if n, ids := h.pub.published(); len(ids) != 0 || n != calls {
		t.Fatalf("the second expire: %d publish calls (was %d), alerts %v; want the dropped timer not looked at again", n, calls, ids)
	}
	h.checkpoint(ctx, t)
	if got, want := h.timers(t), []timer{{d2, sk}}; !slices.Equal(got, want) {
		t.Fatalf("timer index %v after the checkpoint, want the orphan deleted: %v", got, want)
	}

	gate := make(chan struct{})
	h.pub.then(step{gate: gate})
	w3 := background(h.mustApply(ctx, t, a3))
	ref.apply(t, set, a3)
	cp := h.sealAsync(ctx, t)
	h.setWatermark(t, d2.Add(time.Minute))
	h.expireOK(ctx, t)
	if _, ids := h.pub.published(); len(ids) != 0 {
		t.Fatalf("a deadline moved by a checkpoint being written fired %v", ids)
	}
	if got, want := h.timers(t), []timer{{d2, sk}}; !slices.Equal(got, want) {
		t.Errorf("timer index %v while the checkpoint is held, want %v", got, want)
	}
	close(gate)
	if err := recv(t, cp, "the checkpoint"); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, w3, "a3's wait"); err != nil {
		t.Fatal(err)
	}
	h.checkpoint(ctx, t) // expire's epoch: the stale key again
	if got, want := h.timers(t), []timer{{d3, sk}}; !slices.Equal(got, want) {
		t.Fatalf("timer index %v, want %v", got, want)
	}
	if got, want := h.stored(t, sk), ref.state(t, set, "silent", "a"); !bytes.Equal(got, want) {
		t.Errorf("Badger holds %x, want %x", got, want)
	}

	wm := d3.Add(time.Second)
	wantIDs := ref.fire(t, set, wm)
	if len(wantIDs) != 1 {
		t.Fatalf("reference fired %v, want one alert", wantIDs)
	}
	h.setWatermark(t, wm)
	if err := h.s.CheckDeadlines(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ids := h.pub.published(); !slices.Equal(ids, wantIDs) {
		t.Errorf("published %v, want %v", ids, wantIDs)
	}
	if got := h.timers(t); len(got) != 0 {
		t.Errorf("timer index %v after firing, want empty", got)
	}
	if got, want := h.stored(t, sk), ref.state(t, set, "silent", "a"); !bytes.Equal(got, want) {
		t.Errorf("Badger holds %x after firing, want %x", got, want)
	}
}

// With max_keys_per_rule 2 and two keys per rule checkpointed, a third key
// of a threshold rule is dropped (no state, counted in the epoch's key
// caps, in the metric once durable) while its existing keys still count;
// a match rule fails open: the new key alerts without keeping state, the
// existing ones keep their suppression.
func TestKeyCapDropsNewKeysAndMatchRulesFailOpen(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule+suppressedMatchRule, func(c *Config) { c.MaxKeysPerRule = 2 })
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	h.commit(ctx, t,
		match("many", "a", "ma1", at(1)), match("many", "b", "mb1", at(1)),
		match("each", "x", "ex1", at(1)), match("each", "y", "ey1", at(1)))
	if got, want := h.liveKeys(), map[string]int{"many": 2, "each": 2}; !maps.Equal(got, want) {
		t.Fatalf("live keys %v, want %v", got, want)
	}
	_, before := h.pub.published()
	if len(before) != 2 {
		t.Fatalf("alerts %v, want x's and y's", before)
	}

	ez := match("each", "z", "ez1", at(2))
	ref := newReference(h.s.cfg)
	wantZ := ref.apply(t, h.set, ez) // the alert of a key without state
	wait := h.mustApply(ctx, t,
		match("many", "c", "mc1", at(2)), match("many", "a", "ma2", at(2)),
		ez, match("each", "x", "ex2", at(2)))
	h.locked(func() {
		if want := map[string]int{"many": 1, "each": 1}; !maps.Equal(h.s.cur.keyCaps, want) {
			t.Errorf("epoch key caps %v, want %v", h.s.cur.keyCaps, want)
		}
	})
	if n := testutil.ToFloat64(h.s.keyCap.WithLabelValues("many")); n != 0 {
		t.Errorf("key cap hits %v before the checkpoint, want 0 (counted once durable)", n)
	}
	h.checkpoint(ctx, t)
	if err := recv(t, background(wait), "the wait"); err != nil {
		t.Fatal(err)
	}
	if _, ids := h.pub.published(); !slices.Equal(ids[len(before):], wantZ) {
		t.Errorf("alerts of the capped batch %v, want only z's %v (x's suppressed)", ids[len(before):], wantZ)
	}
	for _, k := range [][2]string{{"many", "c"}, {"each", "z"}} {
		if v := h.stored(t, h.sk(t, k[0], k[1])); v != nil {
			t.Errorf("Badger holds state for %s host=%s beyond the key cap", k[0], k[1])
		}
		if v := h.inMemory(h.sk(t, k[0], k[1])); v != nil {
			t.Errorf("memory holds state for %s host=%s beyond the key cap", k[0], k[1])
		}
	}
	var st engine.State
	if err := engine.DecodeState(h.stored(t, h.sk(t, "many", "a")), &st); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(st.IDs, []string{"ma1", "ma2"}) {
		t.Errorf("many host=a holds %v, want ma1 and ma2 (an existing key is never capped)", st.IDs)
	}
	if got, want := h.liveKeys(), map[string]int{"many": 2, "each": 2}; !maps.Equal(got, want) {
		t.Errorf("live keys %v, want %v", got, want)
	}
	for _, rule := range []string{"many", "each"} {
		if n := testutil.ToFloat64(h.s.keyCap.WithLabelValues(rule)); n != 1 {
			t.Errorf("key cap hits of %s %v, want 1", rule, n)
		}
	}
	if s := h.verdict("suppressed"); s != 1 {
		t.Errorf("verdicts suppressed %v, want 1 (x)", s)
	}
}

// The key cap holds within one batch too: three new keys of one rule in a
// single batch, with max_keys_per_rule 2, may not all get state.
func TestKeyCapHoldsWithinOneBatch(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, func(c *Config) { c.MaxKeysPerRule = 2 })
	h.commit(ctx, t, match("many", "a", "a1", t0), match("many", "b", "b1", t0), match("many", "c", "c1", t0))
	if got := h.liveKeys()["many"]; got != 2 {
		t.Errorf("live keys of many %d after one batch of 3 new keys, want the cap, 2", got)
	}
	if got := len(h.badgerStates(t)); got != 2 {
		t.Errorf("Badger holds %d states, want the cap, 2", got)
	}
	if h.stored(t, h.sk(t, "many", "c")) != nil {
		t.Error("Badger holds the third key's state")
	}
	if n := testutil.ToFloat64(h.s.keyCap.WithLabelValues("many")); n != 1 {
		t.Errorf("key cap hits %v, want 1", n)
	}
}

// The key cap counts the keys created by the batches of the epoch in
// memory, before any of them is checkpointed; after a failure, Reset
// counts again what Badger holds, so the same batches handed again get
// the same keys. With max_keys_per_rule 3: a threshold rule's fourth key
// two batches into an epoch is dropped; a match rule's fourth key alerts
// without state (fails open); a failed epoch's keys do not count against
// its retry.
func TestKeyCapHoldsAcrossBatchesOfOneEpoch(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule+suppressedMatchRule, func(c *Config) { c.MaxKeysPerRule = 3 })
	at := t0.Add(time.Second)
	many := func(host string) *event.Match { return match("many", host, "m"+host, at) }
	each := func(host string) *event.Match { return match("each", host, "e"+host, at) }
	ref := newReference(h.s.cfg)

	batches := [][]*event.Match{
		{many("a"), many("b")},
		{many("c"), each("w")},
		{many("d"), each("x"), each("y"), each("z")},
	}
	var waits []<-chan error
	for _, b := range batches {
		waits = append(waits, background(h.mustApply(ctx, t, b...)))
	}
	var want []string
	for _, b := range batches {
		want = append(want, ref.apply(t, h.set, b...)...)
	}
	if got := h.liveKeys(); !maps.Equal(got, map[string]int{"many": 3, "each": 3}) {
		t.Errorf("live keys %v before the checkpoint, want many 3 and each 3", got)
	}
	if v := h.stored(t, h.sk(t, "many", "a")); v != nil {
		t.Fatal("Badger holds a state before the checkpoint")
	}
	h.checkpoint(ctx, t)
	for i, c := range waits {
		if err := recv(t, c, "a wait"); err != nil {
			t.Errorf("batch %d: %v", i, err)
		}
	}
	if _, ids := h.pub.published(); !slices.Equal(ids, want) {
		t.Errorf("alerts %v, want %v (z's too: a match rule fails open)", ids, want)
	}
	for _, k := range [][2]string{{"many", "d"}, {"each", "z"}} {
		if v := h.stored(t, h.sk(t, k[0], k[1])); v != nil {
			t.Errorf("Badger holds state for %s host=%s beyond the key cap", k[0], k[1])
		}
	}
	for _, k := range [][2]string{{"many", "a"}, {"many", "b"}, {"many", "c"}, {"each", "w"}, {"each", "x"}, {"each", "y"}} {
		if got, want := h.stored(t, h.sk(t, k[0], k[1])), ref.state(t, h.set, k[0], k[1]); !bytes.Equal(got, want) {
			t.Errorf("Badger holds %x for %s host=%s, want %x", got, k[0], k[1], want)
		}
	}
	for _, rule := range []string{"many", "each"} {
		if n := testutil.ToFloat64(h.s.keyCap.WithLabelValues(rule)); n != 1 {
			t.Errorf("key cap hits of %s %v, want 1", rule, n)
		}
	}

	// A rule at its cap in memory only, when the epoch fails.
	h2 := newHarness(ctx, t, suppressedMatchRule, func(c *Config) { c.MaxKeysPerRule = 3 })
	errPub := errors.New("nats: connection closed")
	h2.pub.then(step{})
	h2.pub.then(step{err: errPub})
	first := []*event.Match{each("x"), each("y"), each("z")}
	w := background(h2.mustApply(ctx, t, first...))
	if _, err := h2.apply(ctx, each("w")); !errors.Is(err, errPub) {
		t.Fatalf("apply with a failing publish: %v, want %v", err, errPub)
	}
	if err := recv(t, w, "the wait"); !errors.Is(err, errEarlierFailed) {
		t.Fatalf("the first batch: %v, want errEarlierFailed", err)
	}
	h2.reset(ctx, t)
	if got := h2.liveKeys()["each"]; got != 0 {
		t.Errorf("live keys of each %d after Reset, want Badger's 0", got)
	}
	h2.commit(ctx, t, first...)
	h2.commit(ctx, t, each("w"))
	for _, host := range []string{"x", "y", "z"} {
		if h2.stored(t, h2.sk(t, "each", host)) == nil {
			t.Errorf("Badger holds no state for each host=%s: the failed epoch's keys counted against its retry", host)
		}
	}
	if h2.stored(t, h2.sk(t, "each", "w")) != nil {
		t.Error("Badger holds state for each host=w beyond the key cap")
	}
	if got := h2.liveKeys()["each"]; got != 3 {
		t.Errorf("live keys of each %d, want 3", got)
	}
}

// A checkpoint fails while the one before it is durable but its batches'
// waits were not yet called (the consumer calls them later): those waits
// still return nil, and after Reset the next batch applies to what Badger
// holds, the durable checkpoint's state.
func TestFailureLeavesDurableCheckpointsAlone(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, nil)
	sk := h.sk(t, "many", "a")
	m1, m2, m3 := match("many", "a", "e1", t0.Add(time.Second)), match("many", "a", "e2", t0.Add(2*time.Second)), match("many", "a", "e3", t0.Add(3*time.Second))
	ref := newReference(h.s.cfg)
	ref.apply(t, h.set, m1, m2)
	afterM2 := ref.state(t, h.set, "many", "a")
	wantIDs := ref.apply(t, h.set, m3)
	if len(wantIDs) != 1 {
		t.Fatalf("reference fired %v, want one alert", wantIDs)
	}
	final := ref.state(t, h.set, "many", "a")

	h.commit(ctx, t, m1)
	errAck := errors.New("alert not acked")
	h.pub.then(step{})
	h.pub.then(step{waitErr: errAck})
	w2 := h.mustApply(ctx, t, m2)
	h.checkpoint(ctx, t) // durable; its wait is called later
	w3 := h.mustApply(ctx, t, m3)
	if err := recv(t, h.checkpointAsync(ctx), "the checkpoint"); !errors.Is(err, errAck) {
		t.Fatalf("checkpoint returned %v, want %v", err, errAck)
	}
	if got := h.stored(t, sk); !bytes.Equal(got, afterM2) {
		t.Fatalf("Badger holds %x, want the durable checkpoint's %x", got, afterM2)
	}
	h.reset(ctx, t)
	if got := h.inMemory(sk); got != nil {
		t.Errorf("memory holds %x after Reset, want nothing", got)
	}
	h.commit(ctx, t, m3) // the failed batch, handed again
	if err := recv(t, background(w2), "batch 2's wait"); err != nil {
		t.Errorf("batch 2 (durable before the failure): %v", err)
	}
	if err := recv(t, background(w3), "batch 3's wait"); !errors.Is(err, errAck) {
		t.Errorf("batch 3 (failed): %v, want %v", err, errAck)
	}
	if _, ids := h.pub.published(); len(ids) != 2 || ids[0] != wantIDs[0] || ids[1] != wantIDs[0] {
		t.Errorf("published %v, want %v twice (the failed batch and its retry)", ids, wantIDs)
	}
	if got := h.stored(t, sk); !bytes.Equal(got, final) {
		var st engine.State
		_ = engine.DecodeState(got, &st)
		t.Errorf("Badger holds %+v after the retry, want e1, e2, e3 spent (%x)", st, final)
	}
}

// A failed epoch does not move the watermark: its matches are not in
// Badger, and expire would fire the deadlines they moved it past (which a
// crash and restart would not). host=a's deadline is t0+30m; the failed
// epoch moves it to t0+40m and carries host=b at t0+31m+lateness
// (watermark t0+31m). After the failure Badger holds t0+30m, and expire
// must not report host=a silent on a watermark only the failed epoch set.
// Handed again, the epoch moves the watermark once durable.
func TestFailedEpochDoesNotMoveTheWatermark(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, absenceRule, nil)
	lateness := h.s.cfg.AllowedLateness
	skA, skB := h.sk(t, "silent", "a"), h.sk(t, "silent", "b")
	h.commit(ctx, t, match("silent", "a", "a1", t0))
	wm0 := t0.Add(-lateness)
	errAck := errors.New("alert not acked")
	h.pub.then(step{waitErr: errAck})
	a2, b1 := match("silent", "a", "a2", t0.Add(10*time.Minute)), match("silent", "b", "b1", t0.Add(31*time.Minute+lateness))
	wait := h.mustApply(ctx, t, a2, b1)
	if got := h.watermark(); !got.Equal(wm0) {
		t.Errorf("watermark %s after apply, want %s (it moves with the checkpoint)", got, wm0)
	}
	if err := recv(t, h.checkpointAsync(ctx), "the checkpoint"); !errors.Is(err, errAck) {
		t.Fatalf("checkpoint returned %v, want %v", err, errAck)
	}
	if err := recv(t, background(wait), "the wait"); !errors.Is(err, errAck) {
		t.Fatalf("the batch's wait returned %v, want %v", err, errAck)
	}
	if got := h.watermark(); !got.Equal(wm0) {
		t.Errorf("watermark %s after the failed checkpoint, want %s", got, wm0)
	}
	if got := h.mark(t); !got.Equal(t0) {
		t.Errorf("mark %s after the failed checkpoint, want %s", got, t0)
	}
	h.reset(ctx, t)
	h.expireOK(ctx, t)
	if _, ids := h.pub.published(); len(ids) != 0 {
		t.Errorf("alerts %v: host=a reported silent on a watermark only the failed epoch's matches set", ids)
	}
	h.locked(func() {
		if got, want := time.Unix(0, h.s.newestApplied()).UTC(), h.mark(t); !got.Equal(want) {
			t.Errorf("newest applied %s after the failure, want Badger's mark %s", got, want)
		}
	})

	h.commit(ctx, t, a2, b1)
	if got, want := h.watermark(), t0.Add(31*time.Minute); !got.Equal(want) {
		t.Errorf("watermark %s once the epoch is durable, want %s", got, want)
	}
	if got, want := h.mark(t), b1.Time; !got.Equal(want) {
		t.Errorf("mark %s, want %s", got, want)
	}
	h.expireOK(ctx, t)
	if _, ids := h.pub.published(); len(ids) != 0 {
		t.Errorf("alerts %v: host=a's deadline had moved to t0+40m", ids)
	}
	if got, want := h.timers(t), []timer{{a2.Time.Add(30 * time.Minute), skA}, {b1.Time.Add(30 * time.Minute), skB}}; !slices.Equal(got, want) {
		t.Errorf("timer index %v, want %v", got, want)
	}
}

// A cache of 4 states in front of 50 hosts of two rules, over 40 batches,
// checkpointed after every fourth batch by the test, and in between when
// the stage asks for one itself (half the cache dirty) or makes a batch
// wait for the one being written (the whole cache dirty). A state changed
// since the last checkpoint stays in memory (dirty, then sealed) however
// many states memory holds, and clean ones are let go of and read back:
// at every batch, memory or else Badger holds the
// reference's state of every key; the alerts are the reference's, in
// order; at the end Badger holds exactly the reference's states.
func TestSmallCacheLosesNoChangedState(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const cacheKeys, hosts = 4, 50
	h := newHarness(ctx, t, thresholdRule+suppressedMatchRule, func(c *Config) { c.CacheKeys, c.CheckpointKeys = cacheKeys, cacheKeys })
	ref := newReference(h.s.cfg)
	empty := engine.AppendState(nil, &engine.State{})

	rng := rand.New(rand.NewPCG(11, 1))
	var batches [][]*event.Match
	at, id := t0, 0
	for range 40 {
		var b []*event.Match
		for range 6 + rng.IntN(6) {
			host := fmt.Sprintf("h%02d", rng.IntN(1+rng.IntN(hosts))) // the first hosts busier: thresholds reached
			rule := "many"
			if rng.IntN(4) == 0 {
				rule = "each"
			}
			id++
			b = append(b, match(rule, host, fmt.Sprintf("e%04d", id), at.Add(-time.Duration(rng.IntN(10))*time.Second)))
		}
		batches = append(batches, b)
		at = at.Add(time.Duration(2+rng.IntN(6)) * time.Second)
	}

	var wantIDs []string
	touched := map[[2]string]bool{}
	over := 0  // batches after which memory held more than cacheKeys states (dirty and sealed ones)
	letGo := 0 // batches after which some of them were held encoded (let go of: letGoDirty, the checkpointer)
	var waits []<-chan error
	matches := 0
	for i, b := range batches {
		wantIDs = append(wantIDs, ref.apply(t, h.set, b...)...)
		matches += len(b)
		wait, err := h.s.apply(ctx, 0, func(each func(*event.Match) error, _ tracker) (int64, error) {
			var newest int64
			for _, m := range b {
				newest = max(newest, m.At().UnixNano())
				if err := each(m); err != nil {
					return 0, err
				}
			}
			// mu is held: every state the batch touched is in memory,
			// dirty, however many that is.
			for _, m := range b {
				sk := stateKey(h.rule(t, m.RuleID), m.Key)
				if e := h.s.mem[sk]; e == nil || !e.dirty || !slices.Contains(h.s.dirty, e) {
					t.Errorf("batch %d: %q not dirty in memory", i, sk)
				}
			}
			if n, pinned := len(h.s.mem), len(h.s.dirty)+len(h.s.sealed); n > max(cacheKeys, pinned) {
				t.Errorf("memory holds %d states, more than %d and the %d dirty or sealed", n, cacheKeys, pinned)
			} else if n > cacheKeys {
				over++
			}
			return newest, nil
		})
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		waits = append(waits, background(wait))
		h.locked(func() {
			if h.s.encodedN.Load() > 0 {
				letGo++
			}
		})
		for _, m := range b {
			touched[[2]string{m.RuleID, m.Fields["host"]}] = true
		}
		if i%4 == 3 {
			h.checkpoint(ctx, t)
		}
		// What the stage holds of every key: memory, else Badger (nothing
		// else writes Badger meanwhile: a state leaves memory only once
		// durable).
		// The durable states change only with a checkpoint (the stage takes
		// some itself): read again only after one.
		var durable map[string]string
		durableAt := -1.0
		for k := range touched {
			sk := h.sk(t, k[0], k[1])
			got := h.inMemory(sk)
			if got == nil {
				if n := testutil.ToFloat64(h.s.checkpoints.WithLabelValues("ok")); n != durableAt {
					durable, durableAt = h.badgerStates(t), n
				}
				if v, ok := durable[sk]; ok {
					got = []byte(v)
				} else {
					got = empty
				}
			}
			if want := ref.state(t, h.set, k[0], k[1]); !bytes.Equal(got, want) {
				t.Fatalf("after batch %d: the stage holds %x for %s host=%s, want %x", i, got, k[0], k[1], want)
			}
		}
	}
	h.checkpoint(ctx, t)
	for i, c := range waits {
		if err := recv(t, c, "a wait"); err != nil {
			t.Errorf("batch %d: %v", i, err)
		}
	}
	reads := h.s.logReads.Load() + h.s.badgerReads.Load()
	if reads <= int64(len(touched)) || over == 0 || letGo == 0 {
		t.Fatalf("%d states read back for %d keys, %d batches with more than the cache in memory, %d with some held encoded: the test tells nothing", reads, len(touched), over, letGo)
	}
	if len(wantIDs) < 10 {
		t.Fatalf("the reference raised %d alerts: too few to tell anything", len(wantIDs))
	}
	t.Logf("%d matches, %d alerts, %d checkpoints, %d states read back, %d batches with more than the cache in memory",
		matches, len(wantIDs), int(testutil.ToFloat64(h.s.checkpoints.WithLabelValues("ok"))), reads, over)
	if _, ids := h.pub.published(); !slices.Equal(ids, wantIDs) {
		t.Errorf("published %d alerts %v,\nwant %d %v", len(ids), ids, len(wantIDs), wantIDs)
	}
	if got := h.pub.ackedIDs(); !slices.Equal(got, wantIDs) {
		t.Errorf("acked %d alerts, want the %d published, in order", len(got), len(wantIDs))
	}
	want := map[string]string{}
	for _, rule := range []string{"many", "each"} {
		for n := range hosts {
			host := fmt.Sprintf("h%02d", n)
			if st := ref.state(t, h.set, rule, host); !bytes.Equal(st, empty) {
				want[h.sk(t, rule, host)] = string(st)
			}
		}
	}
	if got := h.badgerStates(t); !maps.Equal(got, want) {
		diff := 0
		for k, v := range want {
			if got[k] != v {
				diff++
			}
		}
		t.Errorf("Badger holds %d states, %d of the reference's %d differ or are missing", len(got), diff, len(want))
	}
	total := 0
	for _, n := range h.liveKeys() {
		total += n
	}
	if total != len(want) {
		t.Errorf("%d live keys, want %d", total, len(want))
	}
	var verdicts float64
	for _, v := range verdictNames {
		verdicts += h.verdict(v)
	}
	if int(verdicts) != matches {
		t.Errorf("%v verdicts counted, want one per match, %d", verdicts, matches)
	}
	h.locked(func() {
		if len(h.s.dirty) != 0 || h.s.sealed != nil {
			t.Errorf("%d dirty and %d sealed states after the last checkpoint, want none", len(h.s.dirty), len(h.s.sealed))
		}
	})
}

// A checkpoint in flight (its alerts' acks held) while further batches
// are applied, with a cache of 4. A state it sealed stays in memory while
// more states than that are touched, and is found sealed there, not read
// from Badger, which still
// holds the checkpoint before: the batch that touches it fires on it. A
// batch waits while the whole cache is dirty and a checkpoint is being
// written. Once the acks come, the checkpoint writes the states as sealed
// (not as changed since), then the next one lands after it.
func TestSealedStatesAreFoundWhileTheCheckpointIsInFlight(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, func(c *Config) { c.CacheKeys, c.CheckpointKeys = 4, 4 })
	skA, skB := h.sk(t, "many", "a"), h.sk(t, "many", "b")
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	m1, m2, m3 := match("many", "a", "a1", at(1)), match("many", "a", "a2", at(2)), match("many", "a", "a3", at(3))
	mb := match("many", "b", "b1", at(2))
	x := []*event.Match{match("many", "c", "c1", at(2)), match("many", "d", "d1", at(2)), match("many", "e", "e1", at(2))}
	mf := match("many", "f", "f1", at(3))
	ref := newReference(h.s.cfg)
	ref.apply(t, h.set, m1)
	afterM1 := ref.state(t, h.set, "many", "a")
	ref.apply(t, h.set, m2, mb)
	afterM2 := ref.state(t, h.set, "many", "a")
	ref.apply(t, h.set, x...)
	wantIDs := ref.apply(t, h.set, m3)
	if len(wantIDs) != 1 {
		t.Fatalf("reference fired %v, want one alert", wantIDs)
	}
	ref.apply(t, h.set, mf)

	h.commit(ctx, t, m1)
	gate1, gate2 := make(chan struct{}), make(chan struct{})
	h.pub.then(step{gate: gate1}) // epoch 1
	h.pub.then(step{gate: gate2}) // epoch 2's first batch
	w1 := background(h.mustApply(ctx, t, m2, mb))
	cp1 := h.sealAsync(ctx, t)
	if got := h.stored(t, skA); !bytes.Equal(got, afterM1) {
		t.Fatalf("Badger holds %x for host=a, want the first checkpoint's %x", got, afterM1)
	}

	// Three new keys fill the cache past its size: host=a, sealed, stays.
	wx := background(h.mustApply(ctx, t, x...))
	h.locked(func() {
		e := h.s.mem[skA]
		if e == nil || e.dirty || !e.sealed || !slices.Contains(h.s.sealed, e) || len(h.s.mem) <= h.s.cfg.CacheKeys {
			t.Fatalf("host=a: in memory %v, of %d states; want it there, only sealed, with more than %d states", e != nil, len(h.s.mem), h.s.cfg.CacheKeys)
		}
	})
	if got := h.inMemory(skA); !bytes.Equal(got, afterM2) {
		t.Errorf("memory holds %x for host=a, want the sealed %x", got, afterM2)
	}
	wy := background(h.mustApply(ctx, t, m3))
	if _, ids := h.pub.published(); !slices.Equal(ids, wantIDs) {
		t.Fatalf("published %v, want %v: a3 applied to Badger's older state, not the sealed one", ids, wantIDs)
	}
	h.locked(func() {
		if e := h.s.mem[skA]; e == nil || !e.dirty || !e.sealed || !slices.Contains(h.s.dirty, e) || !slices.Contains(h.s.sealed, e) {
			t.Errorf("host=a is not the sealed entry, dirty again")
		}
	})
	if got, want := h.inMemory(skA), ref.state(t, h.set, "many", "a"); !bytes.Equal(got, want) {
		t.Errorf("memory holds %x for host=a, want %x", got, want)
	}

	// The whole cache is dirty and a checkpoint is being written: the next
	// batch waits for it.
	var wf func() error
	applied := background(func() error {
		var err error
		wf, err = h.apply(ctx, mf)
		return err
	})
	pending(t, applied, "a batch with the cache's worth of states dirty during a checkpoint")
	pending(t, cp1, "the checkpoint (its acks held)")
	pending(t, w1, "epoch 1's wait")
	if got := h.stored(t, skA); !bytes.Equal(got, afterM1) {
		t.Errorf("Badger holds %x for host=a while the checkpoint is held, want %x", got, afterM1)
	}

	close(gate1)
	for what, c := range map[string]<-chan error{"the checkpoint": cp1, "epoch 1's wait": w1, "the waiting batch": applied} {
		if err := recv(t, c, what); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	if got := h.stored(t, skA); !bytes.Equal(got, afterM2) {
		t.Errorf("Badger holds %x for host=a after checkpoint 1, want the sealed %x (not the state changed since)", got, afterM2)
	}
	if got, want := h.stored(t, skB), ref.state(t, h.set, "many", "b"); !bytes.Equal(got, want) {
		t.Errorf("Badger holds %x for host=b after checkpoint 1, want %x", got, want)
	}
	if got, want := h.mark(t), at(2); !got.Equal(want) {
		t.Errorf("mark after checkpoint 1 %s, want %s", got, want)
	}
	pending(t, wx, "epoch 2's wait (its acks held)")

	close(gate2)
	h.checkpoint(ctx, t)
	for what, c := range map[string]<-chan error{"x": wx, "a3": wy, "f": background(wf)} {
		if err := recv(t, c, what+"'s wait"); err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
	for _, host := range []string{"a", "b", "c", "d", "e", "f"} {
		if got, want := h.stored(t, h.sk(t, "many", host)), ref.state(t, h.set, "many", host); !bytes.Equal(got, want) {
			t.Errorf("Badger holds %x for host=%s, want %x", got, host, want)
		}
	}
	if got, want := h.mark(t), at(3); !got.Equal(want) {
		t.Errorf("mark %s, want %s", got, want)
	}
	if got := h.pub.ackedIDs(); !slices.Equal(got, wantIDs) {
		t.Errorf("acked alerts %v, want %v", got, wantIDs)
	}
}

// A batch waiting for the checkpoint being written (the whole cache
// dirty) whose ctx ends gives up before it changed anything: no state, no
// publish, no failure, the next mark not moved; the batches before it
// still checkpoint, and it applies when handed again. The epoch applied
// while the first is written carries older matches: its checkpoint keeps
// the mark where the first put it (a mark never moves back).
func TestCancelledWaitForACheckpointChangesNothing(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, func(c *Config) { c.CacheKeys, c.CheckpointKeys = 4, 4 })
	k := func(i int) *event.Match { return match("many", fmt.Sprint("k", i), fmt.Sprint("e", i), t0) }
	k0, k1 := k(0), k(1)
	k0.Time, k1.Time = t0.Add(30*time.Second), t0.Add(30*time.Second)
	k0.Seen, k1.Seen = k0.Time, k1.Time
	newest := k0.Time
	gate := make(chan struct{})
	h.pub.then(step{gate: gate})
	w0 := background(h.mustApply(ctx, t, k0, k1))
	cp := h.sealAsync(ctx, t)
	w1 := background(h.mustApply(ctx, t, k(2), k(3), k(4), k(5)))

	late := match("many", "late", "late", t0.Add(time.Minute))
	calls, _ := h.pub.published()
	qctx, qcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer qcancel()
	if wait, err := h.apply(qctx, late); !errors.Is(err, context.DeadlineExceeded) || wait != nil {
		t.Fatalf("apply with the cache dirty during a checkpoint: wait %v, err %v; want the deadline exceeded", wait != nil, err)
	}
	if n, _ := h.pub.published(); n != calls {
		t.Errorf("%d publish calls, want %d", n, calls)
	}
	if h.inMemory(h.sk(t, "many", "late")) != nil {
		t.Error("memory holds the cancelled batch's state")
	}
	if h.isFailed() {
		t.Error("a batch that changed nothing failed the stage")
	}
	h.locked(func() {
		if got := time.Unix(0, h.s.newestApplied()).UTC(); !got.Equal(newest) {
			t.Errorf("newest applied %s, want %s", got, newest)
		}
	})
	close(gate)
	if err := recv(t, cp, "the checkpoint"); err != nil {
		t.Fatal(err)
	}
	h.checkpoint(ctx, t)
	for i, c := range []<-chan error{w0, w1} {
		if err := recv(t, c, "a wait"); err != nil {
			t.Errorf("batch %d: %v", i, err)
		}
	}
	for i := range 6 {
		if h.stored(t, h.sk(t, "many", fmt.Sprint("k", i))) == nil {
			t.Errorf("k%d's state not in Badger", i)
		}
	}
	if h.stored(t, h.sk(t, "many", "late")) != nil {
		t.Error("Badger holds the cancelled batch's state")
	}
	if got := h.mark(t); !got.Equal(newest) {
		t.Errorf("mark %s, want %s (not moved back by the older epoch after it)", got, newest)
	}
	h.commit(ctx, t, late)
	if h.stored(t, h.sk(t, "many", "late")) == nil {
		t.Error("the batch handed again did not apply")
	}
	if got, want := h.mark(t), late.Time; !got.Equal(want) {
		t.Errorf("mark %s, want %s", got, want)
	}
}

// The live stage (Run: consumer, checkpointer, timers) on an idle stream:
// host a's last match, then silence. The deadline check fires host a's
// silence, and its alert's ack fails, which fails the checkpoint. No
// match comes after (the source is silent: that is the point of an
// absence rule), so no consumer batch fails and bus.ConsumeAsync never
// calls Reset. The silence must still be raised and acked, by the stage
// applying again from its last checkpoint on its own. (It was not: only
// the consumer's Reset cleared a failure, so until the next match came no
// deadline fired and nothing was checkpointed.)
func TestFailedDeadlineCheckpointRecoversWithoutMatches(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wall := t0
	b, s, clock := newAbsenceStage(ctx, t, wall)
	pub := &fakePublisher{}
	s.publish = pub.publish
	last := wall.Add(-2 * time.Hour)
	m := match("silent", "a", "a1", last)
	if _, err := b.JetStream().Publish(ctx, "matches.0", bus.AppendRecord(nil, event.AppendMatch(nil, m))); err != nil {
		t.Fatal(err)
	}
	defer bustest.Run(ctx, t, s.Run)()
	waitFor(ctx, t, "the match applied and checkpointed", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.wm.Max() == last.UnixNano() && s.writing == nil && s.cur.batches == 0
	})
	bustest.WaitDrained(ctx, t, b, bus.StreamMatches)
	errAck := errors.New("alert not acked: stream full")
	pub.then(step{waitErr: errAck})
	clock.advance(s.cfg.IdleAdvance + time.Second) // the watermark follows the clock, past a's deadline
	waitFor(ctx, t, "host a's silence published", func() bool { _, ids := pub.published(); return len(ids) > 0 })
	deadline := time.After(10 * time.Second)
	for len(pub.ackedIDs()) == 0 {
		select {
		case <-deadline:
			calls, ids := pub.published()
			t.Fatalf("host a's silence never acked after its first ack failed: %d publish calls, alerts %v, failed %v (nothing calls Reset without a match)", calls, ids, s.failed.Load())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// After a failure that only deadline checks took part in, the deadline
// checks may Reset on their own (no consumer will) — but not once a
// consumer batch was refused meanwhile: the consumer hands it again, and
// a batch it handed after it must not be applied first. Here the
// consumer hands m2 while the stage is failed (refused), the deadline
// check runs, then the consumer hands m3 before it has seen m2's wait
// fail, then hands both again in order, calling Reset first (as
// bus.ConsumeAsync does). A match rule with suppression tells the order:
// in order m2 alerts and m3 is suppressed; m3 applied first would alert
// instead.
func TestRefusedBatchKeepsItsOrderAcrossADeadlineCheck(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, absenceRule+suppressedMatchRule, nil)
	set := h.set
	ref := newReference(h.s.cfg)
	s1 := match("silent", "s", "s1", t0)
	h.commit(ctx, t, s1)
	ref.apply(t, set, s1)
	wm := t0.Add(31 * time.Minute)
	h.setWatermark(t, wm)
	wantSilence := ref.fire(t, set, wm)
	if len(wantSilence) != 1 {
		t.Fatalf("reference fired %v, want one silence", wantSilence)
	}

	// The deadline check's alert is not acked: the failed epoch holds no
	// consumer batch.
	errAck := errors.New("alert not acked")
	h.pub.then(step{waitErr: errAck})
	if err := h.s.CheckDeadlines(ctx); !errors.Is(err, errAck) {
		t.Fatalf("CheckDeadlines: %v, want %v", err, errAck)
	}
	late := wm.Add(h.s.cfg.AllowedLateness) // once durable, the watermark stays past the silence's deadline
	m2, m3 := match("each", "x", "e2", late.Add(2*time.Second)), match("each", "x", "e3", late.Add(3*time.Second))
	want := ref.apply(t, set, m2, m3)
	if len(want) != 1 {
		t.Fatalf("reference fired %v, want m2's alert only", want)
	}
	w2 := h.mustApply(ctx, t, m2) // refused: the stage is failed
	if err := recv(t, background(w2), "m2's wait"); !errors.Is(err, errEarlierFailed) {
		t.Fatalf("m2 handed while failed: %v, want errEarlierFailed", err)
	}
	_ = h.expire(ctx) // the timers' next check
	w3 := h.mustApply(ctx, t, m3)
	// The consumer sees m2's wait fail: it hands m2 and m3 again, in
	// order, one at a time, each after Reset.
	_ = background(w3)
	for _, m := range []*event.Match{m2, m3} {
		h.reset(ctx, t)
		h.commit(ctx, t, m)
	}
	if err := h.s.CheckDeadlines(ctx); err != nil {
		t.Fatal(err)
	}
	var got []string
	_, ids := h.pub.published()
	for _, id := range ids {
		if id != wantSilence[0] {
			got = append(got, id)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("match alerts published %v, want %v: m3 was applied before m2", got, want)
	}
	if st, want := h.stored(t, h.sk(t, "each", "x")), ref.state(t, set, "each", "x"); !bytes.Equal(st, want) {
		t.Errorf("Badger holds %x for each host=x, want %x", st, want)
	}
	if acked := h.pub.ackedIDs(); !slices.Contains(acked, wantSilence[0]) {
		t.Errorf("acked %v: the silence was never acked", acked)
	}
}

// Checkpoint on a stage whose last checkpoint failed (no Reset yet)
// returns that, at once: it neither waits for an epoch that no checkpoint
// will seal (one holding only a stale timer's deletion) nor says nil.
func TestCheckpointOnAFailedStageSaysSo(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, nil)
	errAck := errors.New("alert not acked")
	h.pub.then(step{waitErr: errAck})
	w := h.mustApply(ctx, t, match("many", "a", "a1", t0))
	if err := h.s.Checkpoint(ctx); !errors.Is(err, errAck) {
		t.Fatalf("the failing checkpoint: %v, want %v", err, errAck)
	}
	if err := w(); err == nil {
		t.Fatal("the batch's wait: nil after its checkpoint failed")
	}
	for _, drop := range []bool{false, true} {
		if drop {
			h.locked(func() { h.s.drops[string(timerKey(t0.UnixNano(), "w/stale"))] = struct{}{} })
		}
		cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
		err := h.s.Checkpoint(cctx)
		ccancel()
		if !errors.Is(err, errEarlierFailed) {
			t.Errorf("Checkpoint on the failed stage (a drop pending: %v): %v, want %v", drop, err, errEarlierFailed)
		}
	}
}

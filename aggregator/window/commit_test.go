package window

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-siem/outpost/aggregator/bus/bustest"
	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/state/statetest"
	"github.com/outpost-siem/outpost/rules"
)

// The commit layers of the stage (stage.go's package comment), driven
// through apply and expire with a real Badger and an injected publisher:
// no JetStream consumer, so every step of the contract is the test's to
// order.

// t0 is the event time the tests' matches start from.
var t0 = time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC)

const (
	thresholdRule = `
  - {id: many, title: T, kind: threshold, severity: 5, condition: 'host != ""', group_by: [host], threshold: 3, window: 1m}`
	absenceRule = `
  - {id: silent, title: T, kind: absence, severity: 5, condition: 'host != ""', group_by: [host], for: 30m, fields: [host]}`
	suppressedMatchRule = `
  - {id: each, title: T, kind: match, severity: 5, condition: 'host != ""', group_by: [host], suppress: 10m}`
)

// step is what the fake publisher does with one publish call.
type step struct {
	err     error         // publish fails at once
	gate    chan struct{} // wait blocks until it is closed
	waitErr error         // then wait returns it (an alert not acked)
}

// fakePublisher stands in for publishAlerts: it records the alerts of
// every call and does what the queued steps say (succeed by default).
type fakePublisher struct {
	mu    sync.Mutex
	steps []step
	calls [][]*event.Alert // every call's alerts, failed ones included
	acked []*event.Alert   // the alerts whose wait returned nil
}

func (p *fakePublisher) then(st step) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.steps = append(p.steps, st)
}

func (p *fakePublisher) publish(alerts []*event.Alert) (func(context.Context) error, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, slices.Clone(alerts))
	var st step
	if len(p.steps) > 0 {
		st, p.steps = p.steps[0], p.steps[1:]
	}
	if st.err != nil {
		return nil, st.err
	}
	return func(ctx context.Context) error {
		if st.gate != nil {
			select {
			case <-st.gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if st.waitErr != nil {
			return st.waitErr
		}
		p.mu.Lock()
		p.acked = append(p.acked, alerts...)
		p.mu.Unlock()
		return nil
	}, nil
}

// published returns the number of publish calls and the ids of every
// alert handed to publish, in order.
func (p *fakePublisher) published() (calls int, ids []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.calls {
		for _, a := range c {
			ids = append(ids, a.ID)
		}
	}
	return len(p.calls), ids
}

func (p *fakePublisher) ackedIDs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ids []string
	for _, a := range p.acked {
		ids = append(ids, a.ID)
	}
	return ids
}

type harness struct {
	s     *Stage
	set   *rules.Set
	clock *fakeClock
	pub   *fakePublisher
}

// newHarness builds a stage on an embedded JetStream and a Badger dir of
// t's, with the rules given (YAML list items), the fake publisher and a
// fake clock at t0, loads its watermark and key counts as Run does and
// runs its committer until t ends. tweak, if not nil, edits the config
// before validation.
func newHarness(ctx context.Context, t *testing.T, ruleItems string, tweak func(*Config)) *harness {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := bustest.Open(ctx, t)
	db := statetest.Open(t)
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte("rules:" + ruleItems + "\n")}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	var cfg Config
	if tweak != nil {
		tweak(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{}
	clock.set(t0)
	s, err := New(cfg, b, db, set, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s.now = clock.now
	pub := &fakePublisher{}
	s.publish = pub.publish
	if err := s.loadWatermark(); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	err = s.countKeys()
	s.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.runCommitter(cctx)
	}()
	// Cleanups run last first: the committer stops before the DB closes.
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return &harness{s: s, set: set, clock: clock, pub: pub}
}

// apply applies ms as one batch; like MATCHES messages without a
// watermark header, it moves the watermark by the matches' times.
func (h *harness) apply(ctx context.Context, ms ...*event.Match) (settle func() error, err error) {
	return h.s.apply(ctx, func(each func(*event.Match) error) (int64, error) {
		var newest int64
		for _, m := range ms {
			newest = max(newest, m.At().UnixNano())
			if err := each(m); err != nil {
				return 0, err
			}
		}
		return newest, nil
	})
}

// expire checks the deadlines once.
func (h *harness) expire(ctx context.Context) error {
	_, err := h.s.expire(ctx)
	return err
}

// commit applies ms as one batch and waits for its commit.
func (h *harness) commit(ctx context.Context, t *testing.T, ms ...*event.Match) {
	t.Helper()
	settle, err := h.apply(ctx, ms...)
	if err != nil {
		t.Fatal(err)
	}
	if err := recv(t, background(settle), "settle"); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) rule(t *testing.T, id string) *rules.Rule {
	t.Helper()
	r := h.set.Rule(id)
	if r == nil {
		t.Fatalf("no rule %s", id)
	}
	return r
}

func (h *harness) sk(t *testing.T, rule, host string) string {
	return stateKey(h.rule(t, rule), "host="+host)
}

// locked runs f with the stage's lock held.
func (h *harness) locked(f func()) {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	f()
}

// stored returns the encoded state Badger holds under sk, nil if none.
func (h *harness) stored(t *testing.T, sk string) []byte {
	t.Helper()
	var v []byte
	err := h.s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(sk))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// cached returns the encoded state the LRU cache holds for sk, nil if none.
func (h *harness) cached(sk string) []byte {
	st, ok := h.s.cache.Peek(sk)
	if !ok {
		return nil
	}
	return engine.AppendState(nil, st)
}

// timer is one entry of Badger's absence timer index.
type timer struct {
	at time.Time
	sk string
}

func (tm timer) String() string { return fmt.Sprintf("%s %q", tm.at.Format(time.TimeOnly), tm.sk) }

// timers lists Badger's timer index (t/), in key order.
func (h *harness) timers(t *testing.T) []timer {
	t.Helper()
	var out []timer
	err := h.s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(timerPrefix)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			at := int64(binary.BigEndian.Uint64(k[len(timerPrefix):]))
			out = append(out, timer{time.Unix(0, at).UTC(), string(k[len(timerPrefix)+8:])})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// mark is the newest event time Badger holds for the watermark (m/windows).
func (h *harness) mark(t *testing.T) time.Time {
	t.Helper()
	at, err := h.s.loadMark()
	if err != nil {
		t.Fatal(err)
	}
	return time.Unix(0, at).UTC()
}

func (h *harness) liveKeys() map[string]int {
	var m map[string]int
	h.locked(func() { m = maps.Clone(h.s.liveKeys) })
	return m
}

func (h *harness) verdict(name string) float64 {
	return testutil.ToFloat64(h.s.verdicts.WithLabelValues(name))
}

// reference runs the same engine over an in-memory store, with no layers,
// cache or Badger: what the stage must publish and hold.
type reference struct {
	w  *engine.Windows
	ms *engine.MemStore
}

func newReference(cfg Config) *reference {
	return &reference{w: engine.NewWindows(cfg.Lateness), ms: engine.NewMemStore()}
}

func (ref *reference) apply(t *testing.T, set *rules.Set, ms ...*event.Match) []string {
	t.Helper()
	var ids []string
	for _, m := range ms {
		res, err := ref.w.Apply(ref.ms, set.Rule(m.RuleID), m)
		if err != nil {
			t.Fatal(err)
		}
		if res.Alert != nil {
			ids = append(ids, res.Alert.ID)
		}
	}
	return ids
}

func (ref *reference) fire(t *testing.T, set *rules.Set, watermark time.Time) []string {
	t.Helper()
	var ids []string
	_, err := ref.w.FireDue(ref.ms, set.Rule, watermark.UnixNano(), 0, func(_ *rules.Rule, _ engine.Deadline, a *event.Alert, _ engine.Verdict) {
		if a != nil {
			ids = append(ids, a.ID)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// state is the encoded state the reference holds for (rule, host).
func (ref *reference) state(t *testing.T, set *rules.Set, rule, host string) []byte {
	t.Helper()
	st, err := ref.ms.State(set.Rule(rule), "host="+host, false)
	if err != nil {
		t.Fatal(err)
	}
	return engine.AppendState(nil, st)
}

func match(rule, host, id string, at time.Time) *event.Match {
	return &event.Match{RuleID: rule, Key: "host=" + host, Time: at, Seen: at, EventID: id, Fields: map[string]string{"host": host}}
}

// background runs f and hands back its error.
func background(f func() error) <-chan error {
	c := make(chan error, 1)
	go func() { c <- f() }()
	return c
}

// recv waits (at most 5 seconds) for what c hands back.
func recv(t *testing.T, c <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-c:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		return nil
	}
}

// pending fails t if c hands something back within 50ms.
func pending(t *testing.T, c <-chan error, what string) {
	t.Helper()
	select {
	case err := <-c:
		t.Fatalf("%s returned (err %v) while it should still wait", what, err)
	case <-time.After(50 * time.Millisecond):
	}
}

// Two batches touching one key, the second applied while the first still
// waits for its alert acks: the second sees the first's state (a threshold
// of 3 reached across them fires once, with the id the engine gives the
// three matches in one go), the first's layer is not changed by it, nothing
// reaches Badger before the acks, and the commits land in order, each
// moving its states into the cache when settled.
func TestLayersStackAndCommitInOrder(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, nil)
	sk := h.sk(t, "many", "a")
	m1, m2, m3 := match("many", "a", "e1", t0.Add(time.Second)), match("many", "a", "e2", t0.Add(2*time.Second)), match("many", "a", "e3", t0.Add(3*time.Second))
	ref := newReference(h.s.cfg)
	if ids := ref.apply(t, h.set, m1, m2); len(ids) != 0 {
		t.Fatalf("reference fired %v on two matches", ids)
	}
	afterFirst := ref.state(t, h.set, "many", "a")
	wantIDs := ref.apply(t, h.set, m3)
	if len(wantIDs) != 1 {
		t.Fatalf("reference fired %v, want one alert", wantIDs)
	}
	final := ref.state(t, h.set, "many", "a")

	gate1, gate2 := make(chan struct{}), make(chan struct{})
	h.pub.then(step{gate: gate1})
	h.pub.then(step{gate: gate2})
	settle1, err := h.apply(ctx, m1, m2)
	if err != nil {
		t.Fatal(err)
	}
	settle2, err := h.apply(ctx, m3)
	if err != nil {
		t.Fatal(err)
	}
	if calls, ids := h.pub.published(); calls != 2 || !slices.Equal(ids, wantIDs) {
		t.Fatalf("%d publish calls with alerts %v, want 2 calls with %v", calls, ids, wantIDs)
	}
	h.locked(func() {
		if len(h.s.layers) != 2 {
			t.Fatalf("%d layers, want 2", len(h.s.layers))
		}
		if got := engine.AppendState(nil, h.s.layers[0].b.states[sk].st); !bytes.Equal(got, afterFirst) {
			t.Errorf("batch 2 changed batch 1's layer: %x, want %x", got, afterFirst)
		}
	})
	if v := h.stored(t, sk); v != nil {
		t.Errorf("Badger holds %x before any alert was acked", v)
	}
	if h.cached(sk) != nil {
		t.Error("the cache holds a state before any commit")
	}
	if got := h.liveKeys()["many"]; got != 1 {
		t.Errorf("live keys of many %d, want 1 (one key, counted once across layers)", got)
	}
	c1, c2 := background(settle1), background(settle2)
	pending(t, c1, "settle of batch 1")
	pending(t, c2, "settle of batch 2")

	close(gate1)
	if err := recv(t, c1, "settle of batch 1"); err != nil {
		t.Fatal(err)
	}
	pending(t, c2, "settle of batch 2 (its acks are held)")
	if got := h.stored(t, sk); !bytes.Equal(got, afterFirst) {
		t.Errorf("Badger after batch 1: %x, want %x", got, afterFirst)
	}
	if got := h.cached(sk); !bytes.Equal(got, afterFirst) {
		t.Errorf("cache after batch 1 settled: %x, want %x", got, afterFirst)
	}
	if got, want := h.mark(t), t0.Add(2*time.Second); !got.Equal(want) {
		t.Errorf("watermark mark after batch 1 %s, want %s", got, want)
	}
	h.locked(func() {
		if len(h.s.layers) != 1 {
			t.Errorf("%d layers after batch 1 settled, want 1", len(h.s.layers))
		}
	})

	close(gate2)
	if err := recv(t, c2, "settle of batch 2"); err != nil {
		t.Fatal(err)
	}
	if got := h.stored(t, sk); !bytes.Equal(got, final) {
		t.Errorf("Badger after batch 2: %x, want %x", got, final)
	}
	if got := h.cached(sk); !bytes.Equal(got, final) {
		t.Errorf("cache after batch 2 settled: %x, want %x", got, final)
	}
	if got, want := h.mark(t), t0.Add(3*time.Second); !got.Equal(want) {
		t.Errorf("watermark mark after batch 2 %s, want %s", got, want)
	}
	h.locked(func() {
		if len(h.s.layers) != 0 {
			t.Errorf("%d layers after both settled, want 0", len(h.s.layers))
		}
		// A fresh batch reads the final state: from the cache, then (the
		// cache emptied) decoded from Badger.
		for _, from := range []string{"cache", "Badger"} {
			if from == "Badger" {
				h.s.cache.Remove(sk)
			}
			b := h.s.newBatch()
			st, err := b.State(h.rule(t, "many"), "host=a", true)
			b.txn.Discard()
			if err != nil {
				t.Fatal(err)
			}
			if got := engine.AppendState(nil, st); !bytes.Equal(got, final) {
				t.Errorf("a fresh batch reads %x from the %s, want %x", got, from, final)
			}
		}
	})
	if got := h.pub.ackedIDs(); !slices.Equal(got, wantIDs) {
		t.Errorf("acked alerts %v, want %v", got, wantIDs)
	}
	if c, f := h.verdict("counted"), h.verdict("fired"); c != 2 || f != 1 {
		t.Errorf("verdicts counted %v fired %v, want 2 and 1", c, f)
	}
}

// An alert that is not acked fails its batch and every batch applied on
// top of it; none of them reaches Badger (the batch before them does), the
// metrics count none of them, and applying the same matches again starts
// from what Badger holds: the same alert, with the same id, and the state
// the engine gives the matches in one go.
func TestFailedAckFailsEveryLayerAboveAndRetryIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, nil)
	sk := h.sk(t, "many", "a")
	m1, m2, m3 := match("many", "a", "e1", t0.Add(time.Second)), match("many", "a", "e2", t0.Add(2*time.Second)), match("many", "a", "e3", t0.Add(3*time.Second))
	ref := newReference(h.s.cfg)
	ref.apply(t, h.set, m1)
	afterM1 := ref.state(t, h.set, "many", "a")
	wantIDs := ref.apply(t, h.set, m2, m3)
	if len(wantIDs) != 1 {
		t.Fatalf("reference fired %v, want one alert", wantIDs)
	}
	final := ref.state(t, h.set, "many", "a")

	// Batch 0 commits (its acks held until batch 2 is applied), batch 1's
	// alert ack fails, batch 2 (the alert) is applied on top of batch 1.
	gate0, gate1 := make(chan struct{}), make(chan struct{})
	errAck := errors.New("alert not acked: stream full")
	h.pub.then(step{gate: gate0})
	h.pub.then(step{gate: gate1, waitErr: errAck})
	var settles []<-chan error
	for _, m := range []*event.Match{m1, m2, m3} {
		settle, err := h.apply(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		settles = append(settles, background(settle))
	}
	if _, ids := h.pub.published(); !slices.Equal(ids, wantIDs) {
		t.Fatalf("published %v, want %v", ids, wantIDs)
	}
	close(gate0)
	if err := recv(t, settles[0], "settle of batch 0"); err != nil {
		t.Fatalf("batch 0: %v", err)
	}
	close(gate1)
	if err := recv(t, settles[1], "settle of batch 1"); !errors.Is(err, errAck) {
		t.Errorf("batch 1 settled with %v, want %v", err, errAck)
	}
	if err := recv(t, settles[2], "settle of batch 2"); !errors.Is(err, errEarlierFailed) {
		t.Errorf("batch 2 settled with %v, want errEarlierFailed", err)
	}
	if !h.s.failed.Load() {
		t.Error("the stage does not know a commit failed")
	}
	if got := h.stored(t, sk); !bytes.Equal(got, afterM1) {
		t.Errorf("Badger after the failure: %x, want batch 0's state %x", got, afterM1)
	}
	if got := h.cached(sk); !bytes.Equal(got, afterM1) {
		t.Errorf("cache after the failure: %x, want batch 0's state %x", got, afterM1)
	}
	if got, want := h.mark(t), t0.Add(time.Second); !got.Equal(want) {
		t.Errorf("watermark mark %s, want batch 0's %s", got, want)
	}
	if got := h.pub.ackedIDs(); len(got) != 0 {
		t.Errorf("acked alerts %v, want none", got)
	}
	if c, f := h.verdict("counted"), h.verdict("fired"); c != 1 || f != 0 {
		t.Errorf("verdicts counted %v fired %v after the failure, want batch 0's 1 and 0", c, f)
	}

	// Redelivery, oldest first, one at a time (as bus.ConsumeAsync retries).
	h.commit(ctx, t, m2)
	if h.s.failed.Load() {
		t.Error("the next batch did not reset the failure")
	}
	h.commit(ctx, t, m3)
	if _, ids := h.pub.published(); !slices.Equal(ids, append(slices.Clone(wantIDs), wantIDs...)) {
		t.Errorf("published %v, want %v twice (same id: JetStream drops the duplicate)", ids, wantIDs)
	}
	if got := h.pub.ackedIDs(); !slices.Equal(got, wantIDs) {
		t.Errorf("acked alerts %v, want %v", got, wantIDs)
	}
	if got := h.stored(t, sk); !bytes.Equal(got, final) {
		t.Errorf("Badger after the retry: %x, want %x", got, final)
	}
	if got := h.liveKeys()["many"]; got != 1 {
		t.Errorf("live keys of many %d, want 1", got)
	}
	if c, f := h.verdict("counted"), h.verdict("fired"); c != 2 || f != 1 {
		t.Errorf("verdicts counted %v fired %v, want 2 and 1", c, f)
	}
}

// A publish that fails at once discards its batch: no layer, no state, no
// key counted, the watermark not moved; the batch in flight below it
// commits as if nothing happened, and the same matches applied again go
// through.
func TestPublishErrorDiscardsTheBatch(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, nil)
	skA, skB := h.sk(t, "many", "a"), h.sk(t, "many", "b")
	m1 := match("many", "a", "e1", t0.Add(time.Second))
	m2, mb := match("many", "a", "e2", t0.Add(2*time.Second)), match("many", "b", "eb", t0.Add(5*time.Second))
	ref := newReference(h.s.cfg)
	ref.apply(t, h.set, m1)
	afterM1 := ref.state(t, h.set, "many", "a")
	ref.apply(t, h.set, m2, mb)

	gate := make(chan struct{})
	errPub := errors.New("nats: connection closed")
	h.pub.then(step{gate: gate})
	h.pub.then(step{err: errPub})
	settle1, err := h.apply(ctx, m1)
	if err != nil {
		t.Fatal(err)
	}
	if settle, err := h.apply(ctx, m2, mb); !errors.Is(err, errPub) || settle != nil {
		t.Fatalf("apply with a failing publish: settle %v, err %v; want no settle and %v", settle != nil, err, errPub)
	}
	h.locked(func() {
		if len(h.s.layers) != 1 {
			t.Errorf("%d layers, want the one in flight", len(h.s.layers))
		}
		if got, want := time.Unix(0, h.s.newestApplied()).UTC(), m1.Time; !got.Equal(want) {
			t.Errorf("newest match time %s, want %s (the discarded batch's must not count)", got, want)
		}
		if got := h.s.keysTotal.Load(); got != 1 {
			t.Errorf("keys total %d, want 1", got)
		}
	})
	if got := h.liveKeys()["many"]; got != 1 {
		t.Errorf("live keys of many %d, want 1 (host=b's batch was discarded)", got)
	}
	close(gate)
	if err := recv(t, background(settle1), "settle of batch 1"); err != nil {
		t.Fatal(err)
	}
	if got := h.stored(t, skA); !bytes.Equal(got, afterM1) {
		t.Errorf("Badger holds %x for host=a, want %x", got, afterM1)
	}
	if got := h.stored(t, skB); got != nil {
		t.Errorf("Badger holds %x for host=b, from a discarded batch", got)
	}
	if c := h.verdict("counted"); c != 1 {
		t.Errorf("verdicts counted %v, want 1", c)
	}

	h.commit(ctx, t, m2, mb)
	for _, host := range []string{"a", "b"} {
		if got, want := h.stored(t, h.sk(t, "many", host)), ref.state(t, h.set, "many", host); !bytes.Equal(got, want) {
			t.Errorf("Badger holds %x for host=%s, want %x", got, host, want)
		}
	}
	if got := h.liveKeys()["many"]; got != 2 {
		t.Errorf("live keys of many %d, want 2", got)
	}
}

// An absence deadline is indexed in Badger (t/) when its state commits,
// and moving it replaces its timer key. expire fires it once the
// watermark passes it — not before — and deletes its timer key; a timer
// whose state's deadline moved later (an orphan in Badger, or a deadline
// moved by a batch still in flight) is dropped, not fired.
func TestAbsenceTimerIndex(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, absenceRule, nil)
	lateness := h.s.cfg.AllowedLateness
	set := h.set
	skA, skB := h.sk(t, "silent", "a"), h.sk(t, "silent", "b")
	expire := func() {
		t.Helper()
		if err := recv(t, background(func() error { return h.expire(ctx) }), "expire"); err != nil {
			t.Fatal(err)
		}
	}

	// Fired by the watermark matches move.
	ref := newReference(h.s.cfg)
	a1 := match("silent", "a", "a1", t0)
	h.commit(ctx, t, a1)
	ref.apply(t, set, a1)
	if got, want := h.timers(t), []timer{{t0.Add(30 * time.Minute), skA}}; !slices.Equal(got, want) {
		t.Fatalf("timer index %v, want %v", got, want)
	}
	expire()
	if calls, _ := h.pub.published(); calls != 1 {
		t.Fatalf("%d publish calls; expire with nothing due must not publish", calls)
	}
	// host=b's match moves the watermark 1s past host=a's deadline.
	b1 := match("silent", "b", "b1", t0.Add(30*time.Minute+lateness+time.Second))
	h.commit(ctx, t, b1)
	ref.apply(t, set, b1)
	wantIDs := ref.fire(t, set, b1.Time.Add(-lateness))
	if len(wantIDs) != 1 {
		t.Fatalf("reference fired %v, want one alert", wantIDs)
	}
	expire()
	if _, ids := h.pub.published(); !slices.Equal(ids, wantIDs) {
		t.Fatalf("published %v, want host=a's silence %v", ids, wantIDs)
	}
	if got, want := h.timers(t), []timer{{b1.Time.Add(30 * time.Minute), skB}}; !slices.Equal(got, want) {
		t.Errorf("timer index after firing %v, want only host=b's %v", got, want)
	}
	if got, want := h.stored(t, skA), ref.state(t, set, "silent", "a"); !bytes.Equal(got, want) {
		t.Errorf("Badger holds %x for host=a after firing, want %x", got, want)
	}
	expire()
	if calls, ids := h.pub.published(); calls != 3 || !slices.Equal(ids, wantIDs) {
		t.Errorf("after a second expire: %d calls, alerts %v; want 3 calls and %v (fired once)", calls, ids, wantIDs)
	}
}

// Stale timers, on the clock's idle advance: host=a's deadline moves from
// d1 to d2 (the commit replaces its timer key); an orphan key at d1 (its
// delete lost) is dropped once the watermark passes d1. Then a batch still
// in flight moves it again, to d3, and expire runs with the watermark
// between d2 (in Badger's index) and d3 (in the layer): the state it sees
// is the layer's, so it drops d2 and fires nothing. Once the watermark
// passes d3, the silence fires with the engine's id and the index empties.
func TestStaleTimerIsDroppedNotFired(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, absenceRule, nil)
	lateness := h.s.cfg.AllowedLateness
	set := h.set
	sk := h.sk(t, "silent", "a")
	ref := newReference(h.s.cfg)
	expire := func() <-chan error { return background(func() error { return h.expire(ctx) }) }
	setWatermark := func(at time.Time) {
		t.Helper()
		h.clock.set(at.Add(lateness)) // idle for longer than idle_advance: the clock leads
		h.locked(func() {
			if got := time.Unix(0, h.s.Watermark()).UTC(); !got.Equal(at) {
				t.Fatalf("watermark %s, want %s", got, at)
			}
		})
	}

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
	setWatermark(d1.Add(time.Minute))
	if err := recv(t, expire(), "expire"); err != nil {
		t.Fatal(err)
	}
	if _, ids := h.pub.published(); len(ids) != 0 {
		t.Fatalf("a stale timer fired %v", ids)
	}
	if got, want := h.timers(t), []timer{{d2, sk}}; !slices.Equal(got, want) {
		t.Fatalf("timer index %v, want the orphan dropped: %v", got, want)
	}

	// a3 moves the deadline to d3 in a layer whose acks are held.
	gate := make(chan struct{})
	h.pub.then(step{gate: gate})
	settle, err := h.apply(ctx, a3)
	if err != nil {
		t.Fatal(err)
	}
	ref.apply(t, set, a3)
	setWatermark(d2.Add(time.Minute))
	exp := expire()
	pending(t, exp, "expire (its commit queues behind the held layer)")
	close(gate)
	if err := recv(t, exp, "expire"); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, background(settle), "settle"); err != nil {
		t.Fatal(err)
	}
	if _, ids := h.pub.published(); len(ids) != 0 {
		t.Fatalf("a deadline moved by a batch in flight fired %v", ids)
	}
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
	setWatermark(wm)
	if err := recv(t, expire(), "expire"); err != nil {
		t.Fatal(err)
	}
	if _, ids := h.pub.published(); !slices.Equal(ids, wantIDs) {
		t.Errorf("published %v, want %v", ids, wantIDs)
	}
	if got := h.timers(t); len(got) != 0 {
		t.Errorf("timer index %v after firing, want empty", got)
	}
}

// With max_keys_per_rule 2 and two keys per rule committed, a third key of
// a threshold rule is dropped (no state, counted in keyCaps) while its
// existing keys still count; a match rule fails open: the new key alerts
// without keeping state, the existing ones keep their suppression.
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
	settle, err := h.apply(ctx,
		match("many", "c", "mc1", at(2)), match("many", "a", "ma2", at(2)),
		ez, match("each", "x", "ex2", at(2)))
	if err != nil {
		t.Fatal(err)
	}
	h.locked(func() {
		b := h.s.layers[len(h.s.layers)-1].b
		if want := map[string]int{"many": 1, "each": 1}; !maps.Equal(b.keyCaps, want) {
			t.Errorf("batch key caps %v, want %v", b.keyCaps, want)
		}
	})
	if err := recv(t, background(settle), "settle"); err != nil {
		t.Fatal(err)
	}
	if _, ids := h.pub.published(); !slices.Equal(ids[len(before):], wantZ) {
		t.Errorf("alerts of the capped batch %v, want only z's %v (x's suppressed)", ids[len(before):], wantZ)
	}
	for _, k := range [][2]string{{"many", "c"}, {"each", "z"}} {
		if v := h.stored(t, h.sk(t, k[0], k[1])); v != nil {
			t.Errorf("Badger holds state for %s host=%s beyond the key cap", k[0], k[1])
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

// The key cap must hold within one batch too: three new keys of one rule
// in a single batch, with max_keys_per_rule 2, may not all get state.
func TestKeyCapHoldsWithinOneBatch(t *testing.T) {
	t.Parallel()
	// Before the fix: the key cap counts a batch's new keys only at submit (batch.account), so batch.State lets one batch create any number of new keys past max_keys_per_rule.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, func(c *Config) { c.MaxKeysPerRule = 2 })
	h.commit(ctx, t, match("many", "a", "a1", t0), match("many", "b", "b1", t0), match("many", "c", "c1", t0))
	if got := h.liveKeys()["many"]; got > 2 {
		t.Errorf("live keys of many %d after one batch of 3 new keys, want at most the cap, 2", got)
	}
	if n := testutil.ToFloat64(h.s.keyCap.WithLabelValues("many")); n != 1 {
		t.Errorf("key cap hits %v, want 1", n)
	}
}

// A commit fails while the batch below it has committed but not yet been
// settled (its settle runs later on the consumer's goroutine; expire, on
// the timers' goroutine, can take the lock first). The next batch must
// still apply on what Badger holds — not on the older state in the cache.
func TestFailureAfterAnUnsettledCommitAppliesOnBadger(t *testing.T) {
	t.Parallel()
	// Before the fix: resetAfterFailure drops committed but unsettled layers without moving their states into the cache, so the next batch applies on an older cached state and overwrites the commit.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, nil)
	sk := h.sk(t, "many", "a")
	m1, m2, m3 := match("many", "a", "e1", t0.Add(time.Second)), match("many", "a", "e2", t0.Add(2*time.Second)), match("many", "a", "e3", t0.Add(3*time.Second))
	ref := newReference(h.s.cfg)
	ref.apply(t, h.set, m1, m2)
	afterM2 := ref.state(t, h.set, "many", "a")
	wantIDs := ref.apply(t, h.set, m3)
	final := ref.state(t, h.set, "many", "a")

	h.commit(ctx, t, m1) // settled: the cache holds e1
	errAck := errors.New("alert not acked")
	h.pub.then(step{})
	h.pub.then(step{waitErr: errAck})
	settle2, err := h.apply(ctx, m2) // commits; its settle comes later
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.apply(ctx, m3); err != nil { // fails
		t.Fatal(err)
	}
	waitFor(ctx, t, "the failed commit", h.s.failed.Load)
	if got := h.stored(t, sk); !bytes.Equal(got, afterM2) {
		t.Fatalf("Badger holds %x, want batch 2's commit %x", got, afterM2)
	}

	// expire resets after the failure before the consumer settles batch 2.
	if err := h.expire(ctx); err != nil {
		t.Fatal(err)
	}
	h.commit(ctx, t, m3) // the failed batch, redelivered
	if err := recv(t, background(settle2), "settle of batch 2"); err != nil {
		t.Fatalf("batch 2 (committed) settled with %v", err)
	}
	if _, ids := h.pub.published(); !slices.Contains(ids, wantIDs[0]) || len(ids) != 2 {
		t.Errorf("published %v, want %v twice (the failed batch and its retry)", ids, wantIDs)
	}
	if got := h.stored(t, sk); !bytes.Equal(got, final) {
		var st engine.State
		_ = engine.DecodeState(got, &st)
		t.Errorf("Badger holds %+v after the retry, want e1, e2, e3 spent (%x)", st, final)
	}
}

// After a failed commit, the watermark must not keep what the failed
// batch's matches moved it to: they are not in Badger, and expire would
// fire the deadlines they moved (or that a crash and restart would not).
// host=a's deadline is t0+30m; the failed batch moves it to t0+40m and
// carries host=b at t0+33m (watermark t0+31m). Had it committed, nothing
// would be due; after its failure Badger holds t0+30m, and expire must not
// report host=a silent on a watermark only the failed batch set.
func TestFailedBatchDoesNotMoveTheWatermark(t *testing.T) {
	t.Parallel()
	// Before the fix: apply observes a batch's newest match time before its commit and resetAfterFailure does not roll it back, so expire fires deadlines on a watermark set by matches Badger never got.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, absenceRule, nil)
	lateness := h.s.cfg.AllowedLateness
	h.commit(ctx, t, match("silent", "a", "a1", t0))
	errAck := errors.New("alert not acked")
	h.pub.then(step{waitErr: errAck})
	settle, err := h.apply(ctx, match("silent", "a", "a2", t0.Add(10*time.Minute)), match("silent", "b", "b1", t0.Add(31*time.Minute+lateness)))
	if err != nil {
		t.Fatal(err)
	}
	if err := recv(t, background(settle), "settle"); !errors.Is(err, errAck) {
		t.Fatalf("settled with %v, want %v", err, errAck)
	}
	if err := recv(t, background(func() error { return h.expire(ctx) }), "expire"); err != nil {
		t.Fatal(err)
	}
	if _, ids := h.pub.published(); len(ids) != 0 {
		t.Errorf("alerts %v: host=a reported silent on a watermark only the failed batch's matches set", ids)
	}
	h.locked(func() {
		if got, want := time.Unix(0, h.s.wm.Max()).UTC(), h.mark(t); !got.Equal(want) {
			t.Errorf("newest match time %s after the failure, want Badger's %s", got, want)
		}
	})
}

// A batch whose queueing is cancelled (the committer's queue full, ctx
// ending: a shutdown) is dropped, not left as a layer nothing will settle:
// no layer, nothing of it in Badger, the watermark not moved, and the
// batches queued before it still commit. (Its new keys stay counted in
// liveKeys; harmless, as the stage stops and Run recounts them.)
func TestCancelledSubmitDropsTheLayer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, nil)
	gate := make(chan struct{})
	h.pub.then(step{gate: gate})
	var settles []func() error
	// One batch the committer holds, cap(jobs) queued behind it.
	for i := range 1 + cap(h.s.jobs) {
		settle, err := h.apply(ctx, match("many", fmt.Sprint("k", i), "e", t0))
		if err != nil {
			t.Fatal(err)
		}
		settles = append(settles, settle)
	}
	qctx, qcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer qcancel()
	if _, err := h.apply(qctx, match("many", "late", "e", t0.Add(time.Minute))); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("apply with the queue full: %v, want the deadline exceeded", err)
	}
	h.locked(func() {
		if len(h.s.layers) != len(settles) {
			t.Errorf("%d layers, want the %d queued (the cancelled one dropped)", len(h.s.layers), len(settles))
		}
		if got := time.Unix(0, h.s.newestApplied()).UTC(); !got.Equal(t0) {
			t.Errorf("newest match time %s, want %s", got, t0)
		}
	})
	close(gate)
	for i, settle := range settles {
		if err := recv(t, background(settle), "settle"); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		if h.stored(t, h.sk(t, "many", fmt.Sprint("k", i))) == nil {
			t.Errorf("batch %d's state not in Badger", i)
		}
	}
	if h.stored(t, h.sk(t, "many", "late")) != nil {
		t.Error("Badger holds the cancelled batch's state")
	}
	h.locked(func() {
		if len(h.s.layers) != 0 {
			t.Errorf("%d layers after every batch settled, want 0", len(h.s.layers))
		}
	})
	if got, want := h.mark(t), t0; !got.Equal(want) {
		t.Errorf("watermark mark %s, want %s", got, want)
	}
}

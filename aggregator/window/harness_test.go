package window

import (
	"context"
	"encoding/binary"
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
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/bus/bustest"
	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/state"
	"github.com/outpost-siem/outpost/aggregator/state/statetest"
	"github.com/outpost-siem/outpost/rules"
)

// The test harness of the checkpointed stage (stage.go's package
// comment), driven through apply, expire and Checkpoint with a real Badger
// and an injected publisher: no JetStream consumer, so every step of the
// contract is the test's to order.

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
// runs its checkpointer until t ends (with an interval of an hour, unless
// tweak sets one: the test says when to checkpoint). tweak, if not nil,
// edits the config before validation.
func newHarness(ctx context.Context, t *testing.T, ruleItems string, tweak func(*Config)) *harness {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := bustest.Open(ctx, t)
	db := statetest.Open(t)
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte("rules:" + ruleItems + "\n")}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{CheckpointInterval: time.Hour}
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
	// Cleanups run last first: the checkpointer stops before the DB closes.
	t.Cleanup(startCheckpointer(ctx, t, s))
	return &harness{s: s, set: set, clock: clock, pub: pub}
}

// startCheckpointer loads s's watermark and key counts as Run does and
// runs its checkpointer until the func it returns is called.
func startCheckpointer(ctx context.Context, t testing.TB, s *Stage) (stop func()) {
	t.Helper()
	if err := s.open(ctx); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.runCheckpoints(cctx)
	}()
	return func() { cancel(); <-done }
}

// applyBatch applies ms to s as one batch; like MATCHES messages without a
// watermark header, it moves the watermark by the matches' times.
func applyBatch(ctx context.Context, s *Stage, ms []*event.Match) (settle func() error, err error) {
	return applyBatchAt(ctx, s, 0, ms)
}

// applyBatchAt is applyBatch as one MATCHES message at stream sequence
// seq (0: none), which the stage skips if the states hold it already.
func applyBatchAt(ctx context.Context, s *Stage, seq uint64, ms []*event.Match) (settle func() error, err error) {
	return s.apply(ctx, 0, func(each func(*event.Match) error, k tracker) (int64, error) {
		var newest int64
		again := seq != 0 && !k.take(position{bus.StreamMatches, seq, seq})
		for _, m := range ms {
			newest = max(newest, m.At().UnixNano())
			if again {
				continue // moves the watermark only, as handle does
			}
			if err := each(m); err != nil {
				return 0, err
			}
		}
		return newest, nil
	})
}

// storedStates is every window state db holds, encoded, by key, as a
// restart reads them: the keyed states overlaid by the state log after
// its compaction mark, less the states expired. It reads the two at two
// instants: call it with no compaction running.
func storedStates(t *testing.T, db *state.DB, js jetstream.JetStream) map[string]string {
	t.Helper()
	out, _ := keyedStates(t, db)
	st := &store{db: db, js: js, log: slog.New(slog.DiscardHandler)}
	if err := st.loadLog(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	for sk, ls := range st.logged {
		if ls.enc == nil {
			delete(out, sk)
		} else {
			out[sk] = string(ls.enc)
		}
	}
	return out
}

// apply applies ms as one batch; like MATCHES messages without a
// watermark header, it moves the watermark by the matches' times.
func (h *harness) apply(ctx context.Context, ms ...*event.Match) (settle func() error, err error) {
	return applyBatch(ctx, h.s, ms)
}

// expire checks the deadlines once.
func (h *harness) expire(ctx context.Context) error {
	_, err := h.s.expire(ctx)
	return err
}

// commit applies ms as one batch and checkpoints it.
func (h *harness) commit(ctx context.Context, t *testing.T, ms ...*event.Match) {
	t.Helper()
	settle, err := h.apply(ctx, ms...)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.s.Checkpoint(ctx); err != nil {
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

// stored returns the encoded state Badger holds under sk (the keyed
// state, or the state log's newer one), nil if none.
func (h *harness) stored(t *testing.T, sk string) []byte {
	t.Helper()
	if v, ok := storedStates(t, h.s.db, h.s.js)[sk]; ok {
		return []byte(v)
	}
	return nil
}

// letGo makes the store let go of sk's state in memory, as if it had
// never read it (dirty or not). Call with mu held.
func (s *store) letGo(sk string) {
	e := s.mem[sk]
	if e == nil {
		return
	}
	s.unlink(e)
	s.forgetEntry(e)
	s.dirty = slices.DeleteFunc(s.dirty, func(x *entry) bool { return x == e })
	s.sealed = slices.DeleteFunc(s.sealed, func(x *entry) bool { return x == e })
	e.dirty, e.sealed = false, false
}

// logStateDiff logs, decoded, every state of want that got holds
// otherwise, and returns how many.
func logStateDiff(t *testing.T, got, want map[string]string) int {
	t.Helper()
	diff := 0
	for k, v := range want {
		if got[k] != v {
			diff++
			var a, b engine.State
			_ = engine.DecodeState([]byte(v), &a)
			_ = engine.DecodeState([]byte(got[k]), &b)
			t.Logf("%q:\n got %+v\nwant %+v", k, b, a)
		}
	}
	return diff
}

// inMemory returns the encoded state memory holds for sk, nil if none.
func (h *harness) inMemory(sk string) []byte {
	var out []byte
	h.locked(func() {
		if e, ok := h.s.mem[sk]; ok {
			h.s.decoded(e) // sealed, maybe let go of by the checkpointer
			out = engine.AppendState(nil, &e.st)
		}
	})
	return out
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

// reference runs the same engine over an in-memory store, with no
// checkpoints, cache or Badger: what the stage must publish and hold.
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

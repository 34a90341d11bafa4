package window

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/event"
)

// The positions the checkpoints keep (applied.go), where a redelivery
// races a checkpoint, a failed append or open.

// fetchEvents publishes n events to EVENTS and fetches them back through
// a consumer of its own, as the rule filter's consumer hands them.
func fetchEvents(ctx context.Context, t *testing.T, b *bus.Bus, n int) []jetstream.Msg {
	t.Helper()
	for i := range n {
		ev := &event.Event{ID: "ev" + string(rune('0'+i)), Source: "syslog", Host: "h1", Time: t0, Received: t0, Message: "m"}
		if err := b.PublishEvents(ctx, []*event.Event{ev}); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := b.JetStream().CreateConsumer(ctx, bus.StreamEvents, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != n {
		t.Fatalf("fetched %d messages, want %d", len(msgs), n)
	}
	return msgs
}

// fusedHand hands s a batch of EVENTS messages (one message, whose
// events' matches are ms) as the rule filter does when fused: it asks
// Applied, evaluates the message unless held, and hands Apply the matches
// and Applied's answer. It returns the wait once s has applied the batch
// (or failed it).
func fusedHand(ctx context.Context, t *testing.T, s *Stage, msgs []jetstream.Msg, ms []*event.Match) func() error {
	t.Helper()
	held := s.Applied(msgs)
	var evaluated []event.Match
	if held == nil || !held[0] {
		for _, m := range ms {
			evaluated = append(evaluated, *m)
		}
	}
	s.mu.Lock()
	before := s.cur.batches
	s.mu.Unlock()
	wait, err := s.Apply(ctx, evaluated, ms[len(ms)-1].At().UnixNano(), 0, msgs, held)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the batch applied", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.cur.batches == before+1 || s.failed.Load()
	})
	return wait
}

// fusedSettle checkpoints what s applied and settles the batches' waits
// in order, as bus.ConsumeAsync does: from the first that fails, it
// Resets s and hands each batch again (hand(i)), one at a time, each
// checkpointed before the next.
func fusedSettle(ctx context.Context, t *testing.T, s *Stage, waits []func() error, hand func(i int) func() error) {
	t.Helper()
	if err := s.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	for i, w := range waits {
		if err := recv(t, background(w), "wait"); err == nil {
			continue
		}
		if err := s.Reset(ctx); err != nil {
			t.Fatal(err)
		}
		for j := i; j < len(waits); j++ {
			w := hand(j)
			if err := s.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			if err := recv(t, background(w), "wait"); err != nil {
				t.Fatalf("batch %d handed again: %v", j, err)
			}
		}
		return
	}
}

// Fused, an EVENTS message handed again before the checkpoint that holds
// it is durable (its ack wait passed while the checkpoint was written) is
// not held by Applied, which reads the durable positions only: the rule
// filter evaluates it again. take, which reads the epochs' positions too,
// says it is held, so runFused fails the batch (errHeldDiffers); handed
// again after Reset, the two agree, and its matches are applied once.
func TestFusedRedeliveryWithinTheEpochIsNotAppliedTwice(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := atMostThresholdCase()
	h := newHarness(ctx, t, c.rule, nil)
	fctx, stopFused := context.WithCancel(ctx)
	go h.s.runFused(fctx)
	defer func() { stopFused(); <-h.s.fusedDone }()
	msgs := fetchEvents(ctx, t, h.s.bus, 1)

	ref := newReference(h.s.cfg)
	want := ref.apply(t, h.set, c.batches[0]...)
	wantState := ref.state(t, h.set, "few", "h1")

	// The second: handed again, its epoch not yet durable.
	hand := func(int) func() error { return fusedHand(ctx, t, h.s, msgs, c.batches[0]) }
	waits := []func() error{hand(0), hand(1)}
	fusedSettle(ctx, t, h.s, waits, hand)
	_, ids := h.pub.published()
	if got := slices.Compact(slices.Sorted(slices.Values(ids))); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Errorf("alerts %v, want %v (applied once)", got, want)
	}
	if st := h.stored(t, h.sk(t, "few", "h1")); string(st) != string(wantState) {
		t.Errorf("stored state differs from the state of the matches applied once: the message handed again was applied twice")
	}
	if n := h.verdict("duplicate"); n != 0 {
		t.Errorf("%v duplicate verdicts: the message handed again was applied twice", n)
	}
}

// lateJS is a JetStream whose async publish of one state log message (of
// record seq, part part) fails at once, as a publish whose ack timed out
// does (bus: PublishTimeout), while the message is still on its way: it
// lands when land is called.
type lateJS struct {
	jetstream.JetStream
	seq, part string
	mu        sync.Mutex
	held      *nats.Msg
}

type failedFuture struct {
	msg *nats.Msg
	err chan error
}

func (f *failedFuture) Ok() <-chan *jetstream.PubAck { return nil }
func (f *failedFuture) Err() <-chan error            { return f.err }
func (f *failedFuture) Msg() *nats.Msg               { return f.msg }

func (j *lateJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.held == nil && strings.HasPrefix(m.Subject, logSubjectPrefix) && m.Header.Get(logSeqHeader) == j.seq && strings.HasPrefix(m.Header.Get(logPartHeader), j.part+"/") {
		j.held = m
		f := &failedFuture{msg: m, err: make(chan error, 1)}
		f.err <- jetstream.ErrAsyncPublishTimeout
		return f, nil
	}
	return j.JetStream.PublishMsgAsync(m, opts...)
}

// land stores the held message, late.
func (j *lateJS) land(ctx context.Context, t *testing.T) {
	t.Helper()
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.held == nil {
		t.Fatal("no state log message was held")
	}
	if _, err := j.JetStream.PublishMsg(ctx, j.held); err != nil {
		t.Fatal(err)
	}
}

// A checkpoint whose state log append failed (a part's ack timed out)
// fails its epoch; Reset reads its record incomplete, and the consumer
// hands its batches again, one at a time (bus.ConsumeAsync's retry). The
// part whose ack timed out is stored after all. Were the retries' records
// appended behind it, the failed checkpoint's record would be whole
// before them: a restart would skip the failed epoch's batches by its
// positions and overlay its states with the retries', which lack them.
// The fence fails the retry's append instead, and the Reset after it
// reads the record whole, durable, before anything newer.
func TestFailedAppendLandingLateIsFenced(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := func(id string, sec int) []*event.Match {
		return []*event.Match{match("many", "a", id, t0.Add(time.Duration(sec)*time.Second))}
	}
	batches := [][]*event.Match{m("e1", 1), m("e2", 2), m("e3", 3), m("e4", 4), m("e5", 5), m("e6", 6)}

	ref := newProbeRun(t, thresholdRule)
	s, stop := ref.stage(ctx, nil)
	for i, b := range batches {
		if _, err := applyBatchAt(ctx, s, uint64(i+1), b); err != nil {
			t.Fatal(err)
		}
		if err := s.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	want, wantStates := ref.ids(), ref.states()

	run := newProbeRun(t, thresholdRule)
	start := func(js jetstream.JetStream) (*Stage, func()) {
		cfg := Config{CheckpointInterval: time.Hour}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		s, err := New(cfg, run.bus, run.db, run.set, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		if js != nil {
			s.store.js = js
		}
		s.logChunk = 64 // a record in several messages
		s.publish = func(alerts []*event.Alert) (func(context.Context) error, error) {
			run.mu.Lock()
			defer run.mu.Unlock()
			for _, a := range alerts {
				run.published[a.ID] = a.RuleID
			}
			return func(context.Context) error { return nil }, nil
		}
		return s, startCheckpointer(ctx, t, s)
	}
	late := &lateJS{JetStream: run.bus.JetStream(), seq: "1", part: "1"}
	s, stop = start(late)
	// Batches 1-3 in one epoch, whose record (seq 1) fails to append.
	for i, b := range batches[:3] {
		if _, err := applyBatchAt(ctx, s, uint64(i+1), b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Checkpoint(ctx); !errors.Is(err, errLogAppend) {
		t.Fatalf("checkpoint 1: %v, want a failed append", err)
	}
	if err := s.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	// The held part lands (after Reset read the log); the consumer hands
	// batch 1 again, alone, until it is durable (after a failure, once
	// Reset ran, as bus.ConsumeAsync does); the stage restarts.
	late.land(ctx, t)
	for attempt := 0; ; attempt++ {
		if _, err := applyBatchAt(ctx, s, 1, batches[0]); err != nil {
			t.Fatal(err)
		}
		err := s.Checkpoint(ctx)
		if err == nil {
			break
		}
		if attempt == 2 {
			t.Fatalf("batch 1 handed again: %v", err)
		}
		t.Logf("batch 1 handed again: %v", err)
		if err := s.Reset(ctx); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	s, stop = start(nil)
	driveAt(ctx, t, s, batches[1:], 2)
	stop()
	if got := run.ids(); !slices.Equal(got, want) {
		t.Errorf("alerts %v, want %v", got, want)
	}
	if got := run.states(); !maps.Equal(got, wantStates) {
		t.Errorf("stored states differ from the uninterrupted run's: batches the failed checkpoint held were skipped on top of states without them")
	}
}

// Fused, after a crash between a checkpoint's record and its acks, the
// rule filter's consumer hands the EVENTS messages again as soon as the
// pipeline starts (its layers start together), while the windows stage
// still reads its state log (open): Applied, asked before the positions
// are read, holds none, and the filter evaluates the messages. runFused,
// which starts once open is done, finds that take says the durable states
// hold them and fails the batch; handed again after Reset, Applied holds
// them, and their matches are applied once.
func TestFusedRedeliveryBeforeOpenIsNotAppliedTwice(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := atMostThresholdCase()
	h := newHarness(ctx, t, c.rule, nil)
	msgs := fetchEvents(ctx, t, h.s.bus, 1)
	ref := newReference(h.s.cfg)
	ref.apply(t, h.set, c.batches[0]...)
	wantState := ref.state(t, h.set, "few", "h1")

	// The first stage applies the message and its checkpoint is durable;
	// its ack never happens (killed).
	fctx, stopFused := context.WithCancel(ctx)
	go h.s.runFused(fctx)
	fusedSettle(ctx, t, h.s, []func() error{fusedHand(ctx, t, h.s, msgs, c.batches[0])}, nil)
	stopFused()
	<-h.s.fusedDone

	// The new stage: the filter asks before open has read the log.
	s2, err := New(h.s.cfg, h.s.bus, h.s.db, h.set, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s2.publish = h.pub.publish
	held := s2.Applied(msgs)
	var evaluated []event.Match
	if held == nil || !held[0] {
		for _, m := range c.batches[0] {
			evaluated = append(evaluated, *m) // its matches handed again
		}
	}
	t.Cleanup(startCheckpointer(ctx, t, s2)) // opens it
	f2ctx, stopFused2 := context.WithCancel(ctx)
	go s2.runFused(f2ctx)
	defer func() { stopFused2(); <-s2.fusedDone }()
	wait, err := s2.Apply(ctx, evaluated, c.batches[0][len(c.batches[0])-1].At().UnixNano(), 0, msgs, held)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the batch applied", func() bool {
		s2.mu.Lock()
		defer s2.mu.Unlock()
		return s2.cur.batches == 1 || s2.failed.Load()
	})
	fusedSettle(ctx, t, s2, []func() error{wait}, func(int) func() error { return fusedHand(ctx, t, s2, msgs, c.batches[0]) })
	if st := h.stored(t, h.sk(t, "few", "h1")); string(st) != string(wantState) {
		t.Errorf("stored state differs from the state of the matches applied once: the message handed again after the restart was applied twice")
	}
}

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

	"github.com/outpost-siem/outpost/aggregator/event"
)

// The positions the checkpoints keep (applied.go), where a state log
// append fails and its part is stored late.

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

package filter

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/bus/bustest"
	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/state/statetest"
	"github.com/outpost-siem/outpost/aggregator/window"
	"github.com/outpost-siem/outpost/rules"
)

// stopSink is a fused sink whose batches become durable only once the
// rule filter's context ended, as the windows' last checkpoint does at a
// graceful stop (window.Stage.Apply: "at a graceful stop the filter's
// context ends first, and its last batches are still applied and
// checkpointed by the windows, which stop after it").
type stopSink struct {
	once    sync.Once
	applied chan struct{} // closed at the first Apply
}

func (k *stopSink) Consumer(cc bus.ConsumerConfig) bus.ConsumerConfig { return cc }

func (k *stopSink) Apply(ctx context.Context, _ []event.Match, _ []bus.Source, _ int64, _ int) (func() error, error) {
	k.once.Do(func() { close(k.applied) })
	return func() error {
		<-ctx.Done()
		time.Sleep(20 * time.Millisecond) // the checkpoint's write
		return nil
	}, nil
}

// Review (fused): at a graceful stop, the batches in flight are settled
// (their waits return nil: durable) but acked with the consumer's ended
// context: the last message's double ack, which confirms the others, is
// never sent. The next run is handed that EVENTS message again, and its
// matches, already durable, are evaluated again: skipped by their
// position only if the next run keeps positions the same way (not after
// windows.fused was switched: TestSwitchToFusedSkipsMatchesAppliedUnfused).
// A stop that waited for a batch to be durable should ack it.
func TestGracefulStopAcksTheBatchesItSettles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, set, logger := openVictimBus(ctx, t)
	at := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	for i := range 3 {
		ev := &event.Event{ID: "ev" + string(rune('0'+i)), Source: "syslog", Host: "victim01", Time: at, Received: at, Message: "m"}
		if err := b.PublishEvents(ctx, []*event.Event{ev}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(b, set, engine.Lateness{AllowedLateness: 2 * time.Minute}, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	sink := &stopSink{applied: make(chan struct{})}
	s.Fuse(sink)
	stop := bustest.Run(ctx, t, s.Run)
	select {
	case <-sink.applied:
	case <-ctx.Done():
		t.Fatal("no batch handed")
	}
	stop() // a graceful stop: the batch in flight is waited for
	st, err := b.JetStream().Stream(ctx, bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	var left uint64
	for range 50 { // acks without a reply: let the server process them
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if left = info.State.Msgs; left == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("after a graceful stop that settled every batch handed, EVENTS holds %d messages not acked", left)
}

// counterValue is the value of the counter name that reg holds (0 if
// none).
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			v := 0.0
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
			return v
		}
	}
	return 0
}

// The positions' bound: two rule filters sharing outpost-filter, at
// a trickle (a batch of one EVENTS message each, taken in turn), start
// every account afresh at every batch: each leaves a hole in the
// partition's positions (at least the chunks after its run). Filter X is
// killed holding EVENTS message 2 (fetched, not evaluated); restarted at
// once, it and Y take the next 4,098 messages in turn, and message 2 is
// handed to Y once its ack wait passed (30s by default; the windows have
// applied and checkpointed the others by then). The partition's positions
// have more than 4,096 holes by then. When the bound filled the oldest as
// if applied, message 2's match was skipped as republished: lost, though
// never published before. The bound now forgets the oldest spans.
func TestFiltersSharingEventsLoseNoMatchPastTheBound(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := bustest.Open(ctx, t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(`
rules:
  - {id: many, title: T, kind: threshold, severity: 5, condition: 'host != ""', group_by: [host], threshold: 1000000, window: 1m}
`)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	const n = 4100
	base := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	for i := range n {
		at := base.Add(time.Duration(i) * time.Millisecond)
		ev := &event.Event{ID: fmt.Sprint("e", i+1), Source: "syslog", Host: "a", Time: at, Received: at, Message: "m"}
		if err := b.PublishEvents(ctx, []*event.Event{ev}); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := b.JetStream().CreateConsumer(ctx, bus.StreamEvents, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: -1})
	if err != nil {
		t.Fatal(err)
	}
	msgs := fetchN(t, cons, n)
	newStage := func() *Stage {
		s, err := New(b, set, engine.Lateness{AllowedLateness: time.Hour}, logger, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	hand := func(s *Stage, m jetstream.Msg) { handOne(ctx, t, s, m) }
	cfg := window.Config{CheckpointInterval: 50 * time.Millisecond}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	w, err := window.New(cfg, b, statetest.Open(t), set, logger, reg)
	if err != nil {
		t.Fatal(err)
	}
	stop := bustest.Run(ctx, t, w.Run)
	x, y := newStage(), newStage()
	hand(x, msgs[0]) // then x is killed, holding message 2
	x = newStage()   // restarted
	for i := 2; i < n; i++ {
		if i%2 == 0 {
			hand(x, msgs[i])
		} else {
			hand(y, msgs[i])
		}
	}
	bustest.WaitDrained(ctx, t, b, bus.StreamMatches) // applied, checkpointed
	hand(y, msgs[1])                                  // message 2, its ack wait passed
	bustest.WaitDrained(ctx, t, b, bus.StreamMatches)
	stop()
	if r := counterValue(t, reg, "outpost_windows_republished_matches_total"); r != 0 {
		t.Errorf("%v of %d matches, each published once, skipped as republished (applied %v)", r, n, counterValue(t, reg, "outpost_windows_matches_total"))
	}
}

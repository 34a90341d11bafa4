package filter

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/bus/bustest"
	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
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

package bus

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// restartJetStream stops the embedded server's JetStream (as nats-server
// does itself when it runs out of disk) and starts it again after down.
func restartJetStream(t *testing.T, b *Bus, down time.Duration) {
	t.Helper()
	jsCfg := *b.server.JetStreamConfig()
	jsCfg.StoreDir = filepath.Dir(jsCfg.StoreDir) // EnableJetStream adds "jetstream" again
	if err := b.server.ShutdownJetStream(); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(down, func() {
		if err := b.server.EnableJetStream(&jsCfg); err != nil {
			t.Error(err)
		}
	})
}

// TestAckSurvivesJetStreamOutage: a batch handled while JetStream is down
// must end acked once it is back, not stay in the work queue to be
// handled again.
func TestAckSurvivesJetStreamOutage(t *testing.T) {
	b := openTestBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := b.JetStream().Publish(ctx, "events.test", []byte("one")); err != nil {
		t.Fatal(err)
	}
	var handled atomic.Int32
	cctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.Consume(cctx, ConsumerConfig{Stream: StreamEvents, Durable: "test", AckWait: 2 * time.Second}, b.log,
			func(ctx context.Context, msgs []jetstream.Msg) error {
				if handled.Add(1) == 1 {
					restartJetStream(t, b, 500*time.Millisecond) // the ack goes out while it is down
				}
				return nil
			})
	}()
	// Past the ack wait: a lost ack shows as a redelivery.
	time.Sleep(3500 * time.Millisecond)
	stop()
	<-done
	if n := handled.Load(); n != 1 {
		t.Errorf("the message was handled %d times, want 1 (its ack was lost)", n)
	}
	if n := testutil.ToFloat64(b.metrics().ackErrors.WithLabelValues(StreamEvents)); n < 1 {
		t.Errorf("outpost_bus_ack_errors_total{stream=EVENTS} = %v, want the unconfirmed ack counted", n)
	}
	st, err := b.JetStream().Stream(ctx, StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 0 {
		t.Errorf("EVENTS still holds %d acked messages, want 0", n)
	}
}

// TestPublishTimesOut: JetStream does not answer a publish it cannot
// write (a full disk); the wait must end at publish_timeout with an error
// that is counted, and publishing must work again once it is back.
func TestPublishTimesOut(t *testing.T) {
	var cfg Config
	cfg.PublishTimeout = 300 * time.Millisecond
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := Open(context.Background(), cfg, t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	jsCfg := *b.server.JetStreamConfig()
	jsCfg.StoreDir = filepath.Dir(jsCfg.StoreDir)
	if err := b.server.ShutdownJetStream(); err != nil {
		t.Fatal(err)
	}
	// Something takes the publishes and never answers, as a stream that
	// cannot write does.
	sink, err := b.nc.SubscribeSync("events.>")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs := []*event.Event{{ID: "e1", Source: "syslog", Time: time.Now(), Received: time.Now()}}
	start := time.Now()
	err = b.PublishEvents(ctx, evs)
	took := time.Since(start)
	if err == nil || took > 2*time.Second {
		t.Fatalf("PublishEvents with nobody answering: err %v after %s, want an error within about %s", err, took, cfg.PublishTimeout)
	}
	// The error handler runs just after the future's error is sent.
	timeouts := b.metrics().pubErrors.WithLabelValues(StreamEvents, "timeout")
	for i := 0; i < 100 && testutil.ToFloat64(timeouts) == 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if n := testutil.ToFloat64(timeouts); n != 1 {
		t.Errorf("outpost_bus_publish_errors_total{stream=EVENTS,error_type=timeout} = %v, want 1", n)
	}

	_ = sink.Unsubscribe()
	if err := b.server.EnableJetStream(&jsCfg); err != nil {
		t.Fatal(err)
	}
	if err := b.PublishEvents(ctx, evs); err != nil {
		t.Fatalf("PublishEvents after JetStream came back: %v", err)
	}
}

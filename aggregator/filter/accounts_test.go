package filter

import (
	"context"
	"fmt"
	"io"
	"log/slog"
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

// reviewThreshold fires when a host has 3 matches within a minute.
const reviewThreshold = `
rules:
  - {id: many, title: T, kind: threshold, severity: 5, condition: 'host != ""', group_by: [host], threshold: 3, window: 1m}
`

// reviewEvents publishes n EVENTS messages of one event each (host a, a
// second apart) and fetches them through an ephemeral consumer, as the
// rule filter's consumer is handed them.
func reviewEvents(ctx context.Context, t *testing.T, b *bus.Bus, n int) []jetstream.Msg {
	t.Helper()
	base := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	for i := range n {
		at := base.Add(time.Duration(i) * time.Second)
		ev := &event.Event{ID: fmt.Sprint("e", i+1), Source: "syslog", Host: "a", Time: at, Received: at, Message: "m"}
		if err := b.PublishEvents(ctx, []*event.Event{ev}); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := b.JetStream().CreateConsumer(ctx, bus.StreamEvents, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	fetched, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range fetched.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != n {
		t.Fatalf("fetched %d EVENTS messages, want %d", len(msgs), n)
	}
	return msgs
}

// reviewWindows runs a real windows stage over MATCHES until it is
// drained and returns the alerts it published.
func reviewWindows(ctx context.Context, t *testing.T, b *bus.Bus, set *rules.Set) int {
	t.Helper()
	cfg := window.Config{CheckpointInterval: 20 * time.Millisecond}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	w, err := window.New(cfg, b, statetest.Open(t), set, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	stop := bustest.Run(ctx, t, w.Run)
	bustest.WaitDrained(ctx, t, b, bus.StreamMatches)
	stop()
	alerts := 0
	bustest.ReadStream(ctx, t, b, bus.StreamAlerts, func(*jetstream.RawStreamMsg) { alerts++ })
	return alerts
}

// Where the rule filters' accounts of EVENTS positions must start afresh:
// the MATCHES message of an EVENTS message must not account for the
// position of one its rule filter did not evaluate just before (the
// windows would skip that one's match when it comes, and the threshold of
// 3 matches would never fire). Each case hands EVENTS messages 1 to 3 to
// rule filters in an order.
func TestAccountsSpanOnlyWhatOneFilterEvaluated(t *testing.T) {
	for _, c := range []struct {
		name string
		// hands is (filter, EVENTS message index) in order.
		hands [][2]int
	}{
		// Two rule filters share EVENTS through the outpost-filter
		// durable consumer (docs/operations.md, "Scaling out, today"):
		// filter 0 is handed messages 1 and 3, filter 1 message 2.
		{"two filters sharing EVENTS", [][2]int{{0, 0}, {0, 2}, {1, 1}}},
		// One rule filter, restarted after a kill: the killed one (0)
		// had fetched 1 (and published its match) and 2 in two fetches.
		// The restarted one (1) is handed 1 again once its ack wait
		// passed, then 3 (never delivered before), and 2 only once its
		// own ack wait passed.
		{"a restarted filter, redelivered out of order", [][2]int{{0, 0}, {1, 0}, {1, 2}, {1, 1}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			b := bustest.Open(ctx, t)
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(reviewThreshold)}}, ".")
			if err != nil {
				t.Fatal(err)
			}
			msgs := reviewEvents(ctx, t, b, 3)
			stages := map[int]*Stage{}
			for _, h := range c.hands {
				s := stages[h[0]]
				if s == nil {
					if s, err = New(b, set, engine.Lateness{AllowedLateness: 2 * time.Minute}, logger, prometheus.NewRegistry()); err != nil {
						t.Fatal(err)
					}
					stages[h[0]] = s
				}
				wait, err := s.handle(ctx, []jetstream.Msg{msgs[h[1]]})
				if err != nil {
					t.Fatal(err)
				}
				if err := wait(); err != nil {
					t.Fatal(err)
				}
			}
			var sources []string
			bustest.ReadStream(ctx, t, b, bus.StreamMatches, func(m *jetstream.RawStreamMsg) {
				sources = append(sources, m.Header.Get(bus.HeaderSource))
			})
			if alerts := reviewWindows(ctx, t, b, set); alerts != 1 {
				t.Errorf("%d alerts, want 1: three matches of host a within a minute (MATCHES sources %q)", alerts, sources)
			}
		})
	}
}

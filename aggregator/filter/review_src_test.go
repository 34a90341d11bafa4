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

// Two rule filters share EVENTS through the outpost-filter durable
// consumer (docs/operations.md, "Scaling out, today"): X is handed EVENTS
// messages 1 and 3, Y message 2, and X's MATCHES message for 3 lands before
// Y's for 2. X's message accounts for the positions since its previous
// message to the partition (FROM = X's next), which include message 2's:
// X claims message 2 gave the partition nothing, though Y evaluated it and
// publishes a match there. The windows then skip Y's match as held, and
// the threshold (3 matches) never fires: an alert lost with no crash at
// all.
func TestTwoRuleFiltersSharingEventsLoseNoMatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := bustest.Open(ctx, t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(reviewThreshold)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	msgs := reviewEvents(ctx, t, b, 3)
	newStage := func() *Stage {
		s, err := New(b, set, engine.Lateness{AllowedLateness: 2 * time.Minute}, logger, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	x, y := newStage(), newStage()
	hand := func(s *Stage, m jetstream.Msg) {
		t.Helper()
		wait, err := s.handle(ctx, []jetstream.Msg{m})
		if err != nil {
			t.Fatal(err)
		}
		if err := wait(); err != nil {
			t.Fatal(err)
		}
	}
	hand(x, msgs[0])
	hand(x, msgs[2])
	hand(y, msgs[1])
	var sources []string
	bustest.ReadStream(ctx, t, b, bus.StreamMatches, func(m *jetstream.RawStreamMsg) {
		sources = append(sources, m.Header.Get(bus.HeaderSource))
	})
	if alerts := reviewWindows(ctx, t, b, set); alerts != 1 {
		t.Errorf("%d alerts, want 1: three matches of host a within a minute (MATCHES sources %q)", alerts, sources)
	}
}

// One rule filter, restarted after a kill: the killed one had fetched
// EVENTS 1 (and published its match) and 2 (not yet evaluated), in two
// fetches. The restarted one is handed 1 again once its ack wait passed,
// then 3 (never delivered before), and 2 only once its own ack wait
// passed. Its message for 3 must not account for 2's position (it never
// evaluated 2): the windows would skip 2's match when it comes, and the
// threshold would never fire.
func TestRestartedFilterLosesNoRedeliveredMatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := bustest.Open(ctx, t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(reviewThreshold)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	msgs := reviewEvents(ctx, t, b, 3)
	newStage := func() *Stage {
		s, err := New(b, set, engine.Lateness{AllowedLateness: 2 * time.Minute}, logger, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	hand := func(s *Stage, m jetstream.Msg) {
		t.Helper()
		wait, err := s.handle(ctx, []jetstream.Msg{m})
		if err != nil {
			t.Fatal(err)
		}
		if err := wait(); err != nil {
			t.Fatal(err)
		}
	}
	hand(newStage(), msgs[0]) // the killed filter: 1 published, 2 fetched, then kill -9
	restarted := newStage()
	hand(restarted, msgs[0]) // redelivered
	hand(restarted, msgs[2]) // new
	hand(restarted, msgs[1]) // redelivered later
	var sources []string
	bustest.ReadStream(ctx, t, b, bus.StreamMatches, func(m *jetstream.RawStreamMsg) {
		sources = append(sources, m.Header.Get(bus.HeaderSource))
	})
	if alerts := reviewWindows(ctx, t, b, set); alerts != 1 {
		t.Errorf("%d alerts, want 1: three matches of host a within a minute (MATCHES sources %q)", alerts, sources)
	}
}

package window

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/event"
)

// The rule filter, killed after it published a batch's matches and before
// it acked the batch's events, is handed the events again and publishes
// the same matches again: at new MATCHES positions, at the same EVENTS
// positions (bus.HeaderSource). For every probe case (a rule kind for which
// applying a match twice is not a no-op), a stage handed the republished
// messages, and a restarted one handed them a third time, ends with the
// alerts and states of a run that saw them once.
func TestRepublishedMatchesAreSkipped(t *testing.T) {
	for name, c := range probeCases() {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			ref := newProbeRun(t, c.rule)
			s, stop := ref.stage(ctx, nil)
			cons := matchesConsumer(ctx, t, ref.bus.JetStream())
			handleAll(ctx, t, s, publishSourced(ctx, t, ref.bus.JetStream(), cons, c.batches, 1))
			stop()

			run := newProbeRun(t, c.rule)
			js := run.bus.JetStream()
			cons = matchesConsumer(ctx, t, js)
			s, stop = run.stage(ctx, nil)
			// Applied and checkpointed, the deadlines not yet checked
			// (the watermark's move is not acted on) when the copies come.
			first := publishSourced(ctx, t, js, cons, c.batches, 1)
			handleEach(ctx, t, s, first)
			if err := s.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			again := publishSourced(ctx, t, js, cons, c.batches, 1)
			handleAll(ctx, t, s, again)
			ackAll(ctx, t, first)
			stop()
			if n := testutil.ToFloat64(s.redelivered); int(n) != len(again) {
				t.Errorf("%v of %d republished messages recognised", n, len(again))
			}
			s2, stop2 := run.stage(ctx, nil)
			third := publishSourced(ctx, t, js, cons, c.batches, 1)
			handleAll(ctx, t, s2, third)
			stop2()
			if n := testutil.ToFloat64(s2.redelivered); int(n) != len(third) {
				t.Errorf("after a restart, %v of %d republished messages recognised", n, len(third))
			}
			if got, want := run.ids(), ref.ids(); !slices.Equal(got, want) {
				t.Errorf("alerts %v, want the single run's %v", run.published, ref.published)
			}
			if got, want := run.states(), ref.states(); !maps.Equal(got, want) {
				t.Errorf("stored states differ from the single run's:\n got %q\nwant %q", got, want)
			}
		})
	}
}

// publishSourced publishes each non-empty batch as one MATCHES message on
// partition 0, as the rule filter does for the EVENTS message at sequence
// first+i, and fetches them through cons (whose earlier messages are
// acked), as the stage's consumer is handed them.
func publishSourced(ctx context.Context, t *testing.T, js jetstream.JetStream, cons jetstream.Consumer, batches [][]*event.Match, first int) []jetstream.Msg {
	t.Helper()
	n := 0
	for i, batch := range batches {
		if len(batch) == 0 {
			continue
		}
		msg := nats.NewMsg("matches.0")
		for _, m := range batch {
			msg.Data = bus.AppendRecord(msg.Data, event.AppendMatch(nil, m))
		}
		pos, _ := bus.SourcePosition(uint64(first+i), 0)
		p := strconv.FormatUint(pos, 10)
		msg.Header.Set(bus.HeaderSource, p+" "+p)
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
		n++
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

// matchesConsumer is a consumer of MATCHES as the stage's is.
func matchesConsumer(ctx context.Context, t *testing.T, js jetstream.JetStream) jetstream.Consumer {
	t.Helper()
	cons, err := js.CreateConsumer(ctx, bus.StreamMatches, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	return cons
}

// handleEach hands s each message as a batch of its own.
func handleEach(ctx context.Context, t *testing.T, s *Stage, msgs []jetstream.Msg) {
	t.Helper()
	for _, msg := range msgs {
		if _, err := s.handle(ctx, []jetstream.Msg{msg}); err != nil {
			t.Fatal(err)
		}
	}
}

// handleAll hands s each message as a batch of its own, then checkpoints
// and runs the deadline checks, as Run does, and acks them.
func handleAll(ctx context.Context, t *testing.T, s *Stage, msgs []jetstream.Msg) {
	t.Helper()
	handleEach(ctx, t, s, msgs)
	for range 3 { // a checkpoint moves the watermark, which may pass more deadlines
		if err := s.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.expire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ackAll(ctx, t, msgs)
}

func ackAll(ctx context.Context, t *testing.T, msgs []jetstream.Msg) {
	t.Helper()
	for _, msg := range msgs {
		if err := msg.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

package window

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/event"
)

// After a restart JetStream hands a killed consumer's unacked messages
// only once their ack wait passed, after newer ones. Those late messages
// were never applied: the stage must apply them, though newer positions
// are already durable (a high-water mark of positions skipped them, and
// lost their alerts).
func TestLateRedeliveryIsApplied(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := func(host, id string, sec int) []*event.Match {
		return []*event.Match{match("many", host, id, t0.Add(time.Duration(sec)*time.Second))}
	}
	// Five batches of host a (checkpoint 1), five of host b (checkpoint
	// 2, killed before it is durable), then two of host c.
	var batches [][]*event.Match
	for i := range 5 {
		batches = append(batches, m("a", "a"+string(rune('0'+i)), i))
	}
	for i := range 5 {
		batches = append(batches, m("b", "b"+string(rune('0'+i)), 5+i))
	}
	late, newer := batches[5:10], [][]*event.Match{m("c", "c0", 10), m("c", "c1", 11), m("c", "c2", 12)}

	ref := newProbeRun(t, thresholdRule)
	s, stop := ref.stage(ctx, nil)
	drive(ctx, t, s, append(slices.Clone(batches), newer...))
	stop()
	want := ref.ids()
	if len(want) != 3 {
		t.Fatalf("the uninterrupted run raised %d alerts, want one per host", len(want))
	}

	run := newProbeRun(t, thresholdRule)
	n := 0
	s, stop = run.stage(ctx, func(step string) error {
		if step == "sealed" {
			n++
		}
		if step == "acked" && n == 2 {
			return errors.New("kill -9")
		}
		return nil
	})
	if acked := drive(ctx, t, s, batches); acked != 5 {
		t.Fatalf("%d batches acked before the kill, want 5", acked)
	}
	stop()
	// The new instance: the newer messages first, then the late ones at
	// the positions they had.
	s2, stop2 := run.stage(ctx, nil)
	for i, b := range newer {
		if _, err := applyBatchAt(ctx, s2, uint64(11+i), b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s2.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	driveAt(ctx, t, s2, late, 6)
	stop2()
	if got := run.ids(); !slices.Equal(got, want) {
		t.Errorf("alerts %v, want %v: a message handed again late was skipped", run.published, ref.published)
	}
}

// MATCHES messages JetStream hands again are not applied again: the stage
// skips every message whose position the states hold, counts it, and a
// restart reads the positions back. Through handle, with real JetStream
// messages.
func TestRedeliveredMessagesAreSkipped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, nil)
	js := h.s.bus.JetStream()
	for i, id := range []string{"e1", "e2"} {
		msg := nats.NewMsg("matches.0")
		msg.Data = bus.AppendRecord(nil, event.AppendMatch(nil, match("many", "a", id, t0.Add(time.Duration(i)*time.Second))))
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	msgs := fetch(ctx, t, js, bus.StreamMatches, 2)
	for round := range 2 { // the second: handed again
		settle, err := h.s.handle(ctx, msgs)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.s.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
		if err := recv(t, background(settle), "settle"); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	if c, d := h.verdict("counted"), h.verdict("duplicate"); c != 2 || d != 0 {
		t.Errorf("verdicts counted %v duplicate %v, want 2 and 0: a redelivered match was applied again", c, d)
	}
	if n := testutil.ToFloat64(h.s.redelivered); n != 2 {
		t.Errorf("%v messages counted as redelivered, want 2", n)
	}
	// What a restart reads back: the positions the checkpoints hold.
	s2 := restarted(ctx, t, h)
	for _, msg := range msgs {
		md, err := msg.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		if !s2.holds(md.Stream, md.Sequence.Stream) {
			t.Errorf("after a restart, message %d of %s is not held", md.Sequence.Stream, md.Stream)
		}
	}
	if s2.holds(bus.StreamMatches, 3) {
		t.Error("after a restart, message 3 (never handed) is held")
	}
}

// The positions a compaction moves into Badger still hold after a restart,
// once the records that carried them are purged.
func TestPositionsSurviveACompaction(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, func(c *Config) { c.StateLog.Memory = 1 })
	for i := range 3 {
		if _, err := applyBatchAt(ctx, h.s, uint64(i+1), []*event.Match{match("many", "a", string(rune('x'+i)), t0)}); err != nil {
			t.Fatal(err)
		}
		if err := h.s.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(h.s.compactionsDone.WithLabelValues("ok")) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("no compaction ran")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.locked(func() {
		for h.s.compactDone != nil {
			_ = h.s.waitCompaction(ctx)
		}
	})
	s2 := restarted(ctx, t, h)
	for seq := uint64(1); seq <= 3; seq++ {
		if !s2.holds(bus.StreamMatches, seq) {
			t.Errorf("after compactions and a restart, position %d is not held", seq)
		}
	}
}

// A position is of one MATCHES stream: one deleted and made again numbers
// its messages from 1 again, and a restart must not skip them as handed
// again.
func TestPositionOfAnotherMatchesStreamIsIgnored(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, nil)
	if _, err := applyBatchAt(ctx, h.s, 1, []*event.Match{match("many", "a", "e1", t0)}); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if s2 := restarted(ctx, t, h); !s2.holds(bus.StreamMatches, 1) {
		t.Fatal("position 1 is not held after a restart")
	}
	js := h.s.bus.JetStream()
	stream, err := js.Stream(ctx, bus.StreamMatches)
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	if err := js.DeleteStream(ctx, bus.StreamMatches); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // another creation time
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if s2 := restarted(ctx, t, h); s2.holds(bus.StreamMatches, 1) {
		t.Error("after MATCHES was made again, its message 1 is held as handed again")
	}
}

// restarted is a new stage on h's Badger and JetStream, opened as Run
// opens one (the watermark, the state log and the positions read back).
func restarted(ctx context.Context, t *testing.T, h *harness) *Stage {
	t.Helper()
	s, err := New(h.s.cfg, h.s.bus, h.s.db, h.set, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.open(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

// fetch takes n messages of stream through a consumer of its own, as a
// stage's consumer is handed them.
func fetch(ctx context.Context, t *testing.T, js jetstream.JetStream, stream string, n int) []jetstream.Msg {
	t.Helper()
	cons, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	return fetchFrom(t, cons, n)
}

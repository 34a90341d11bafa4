package window

import (
	"context"
	"fmt"
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
			matches := matchCount(c.batches)
			if n := testutil.ToFloat64(s.republished); int(n) != matches {
				t.Errorf("%v of %d republished matches recognised", n, matches)
			}
			s2, stop2 := run.stage(ctx, nil)
			third := publishSourced(ctx, t, js, cons, c.batches, 1)
			handleAll(ctx, t, s2, third)
			stop2()
			if n := testutil.ToFloat64(s2.republished); int(n) != matches {
				t.Errorf("after a restart, %v of %d republished matches recognised", n, matches)
			}
			sameAsSingleRun(t, run, ref)
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
		msg.Header.Set(bus.HeaderSource, strconv.FormatUint(pos, 10)+" 0:"+strconv.Itoa(len(batch)))
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
		n++
	}
	return fetchFrom(t, cons, n)
}

// fetchFrom takes n messages through cons, as a stage's consumer is
// handed them.
func fetchFrom(t *testing.T, cons jetstream.Consumer, n int) []jetstream.Msg {
	t.Helper()
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

// matchCount is how many matches the batches hold.
func matchCount(batches [][]*event.Match) int {
	n := 0
	for _, b := range batches {
		n += len(b)
	}
	return n
}

// sameAsSingleRun reports (t.Error) alerts or stored states of run that
// differ from ref's.
func sameAsSingleRun(t *testing.T, run, ref *crashRun) {
	t.Helper()
	if got, want := run.ids(), ref.ids(); !slices.Equal(got, want) {
		t.Errorf("alerts %v, want the single run's %v", run.published, ref.published)
	}
	if got, want := run.states(), ref.states(); !maps.Equal(got, want) {
		t.Errorf("stored states differ from the single run's:\n got %q\nwant %q", got, want)
	}
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

// A rule filter handed its events again may batch them otherwise: a
// MATCHES message then holds runs of EVENTS messages the states hold and
// of ones they do not. Each run is skipped or applied on its own, and a
// message accounts for the positions between its runs (they gave its
// partition nothing).
func TestRepublishedRunsAreSkippedOneByOne(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, nil)
	js := h.s.bus.JetStream()
	cons := matchesConsumer(ctx, t, js)
	pos := func(seq uint64) uint64 { p, _ := bus.SourcePosition(seq, 0); return p }
	publish := func(header string, ids ...string) []jetstream.Msg {
		msg := nats.NewMsg("matches.0")
		for i, id := range ids {
			msg.Data = bus.AppendRecord(msg.Data, event.AppendMatch(nil, match("many", "a", id, t0.Add(time.Duration(i)*time.Second))))
		}
		msg.Header.Set(bus.HeaderSource, header)
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
		return fetchFrom(t, cons, 1)
	}
	p1, p3 := pos(1), pos(3)
	// EVENTS message 1 gave a1 and a2; 2 gave this partition nothing.
	handleAll(ctx, t, h.s, publish(fmt.Sprintf("%d 0:2", p1), "a1", "a2"))
	// Again, batched with message 3: a1, a2 held, b1 new.
	handleAll(ctx, t, h.s, publish(fmt.Sprintf("%d 0:2 %d:1", p1, p3-p1), "a1", "a2", "b1"))
	// Message 3 alone, as 2 would be (accounted for by the message before).
	handleAll(ctx, t, h.s, publish(fmt.Sprintf("%d 0:1", pos(2)), "x"))
	handleAll(ctx, t, h.s, publish(fmt.Sprintf("%d 0:1", p3), "b1"))
	// The rule's threshold is 3: b1 fires.
	if c, f, d := h.verdict("counted"), h.verdict("fired"), h.verdict("duplicate"); c != 2 || f != 1 || d != 0 {
		t.Errorf("verdicts counted %v fired %v duplicate %v, want 2 (a1, a2), 1 (b1) and 0", c, f, d)
	}
	if n := testutil.ToFloat64(h.s.republished); n != 4 {
		t.Errorf("%v matches skipped as republished, want 4 (a1, a2, x, b1)", n)
	}
	s2 := restarted(ctx, t, h)
	for _, p := range []uint64{p1, pos(2), p3, p1 + 1, p3 - 1} {
		if !s2.holds(sourceStream("matches.0"), p) {
			t.Errorf("after a restart, EVENTS position %d is not held", p)
		}
	}
	if s2.holds(sourceStream("matches.0"), p3+1) || s2.holds(sourceStream("matches.1"), p1) {
		t.Error("after a restart, a position never accounted for is held")
	}
}

// The same, fused (windows.fused): the rule filter hands the matches in
// process with the EVENTS positions they come from, and hands a batch of
// events again after a crash or a failure.
func TestRepublishedFusedBatchesAreSkipped(t *testing.T) {
	for name, c := range probeCases() {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			ref := newProbeRun(t, c.rule)
			s, stop := ref.stage(ctx, nil)
			applyFusedAll(ctx, t, s, c.batches)
			settleAll(ctx, t, s)
			stop()

			run := newProbeRun(t, c.rule)
			s, stop = run.stage(ctx, nil)
			applyFusedAll(ctx, t, s, c.batches)
			if err := s.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			applyFusedAll(ctx, t, s, c.batches) // handed again
			settleAll(ctx, t, s)
			stop()
			matches := matchCount(c.batches)
			if n := testutil.ToFloat64(s.republished); int(n) != matches {
				t.Errorf("%v of %d republished matches recognised", n, matches)
			}
			s2, stop2 := run.stage(ctx, nil)
			applyFusedAll(ctx, t, s2, c.batches) // and after a restart
			settleAll(ctx, t, s2)
			stop2()
			if n := testutil.ToFloat64(s2.republished); int(n) != matches {
				t.Errorf("after a restart, %v of %d republished matches recognised", n, matches)
			}
			sameAsSingleRun(t, run, ref)
		})
	}
}

// applyFusedAll applies the batches as the rule filter hands them fused,
// all in one batch of events: batch i the matches of EVENTS message i+1.
func applyFusedAll(ctx context.Context, t *testing.T, s *Stage, batches [][]*event.Match) {
	t.Helper()
	fb := &fusedBatch{applied: make(chan struct{})}
	var src bus.Source
	for i, batch := range batches {
		if len(batch) == 0 {
			continue
		}
		pos, _ := bus.SourcePosition(uint64(i+1), 0)
		if len(src.Runs) == 0 {
			src.From = pos
		}
		src.Runs = append(src.Runs, bus.SourceRun{Pos: pos, N: len(batch)})
		for _, m := range batch {
			fb.ms = append(fb.ms, *m)
			fb.newest = max(fb.newest, m.At().UnixNano())
		}
	}
	fb.src = []bus.Source{src}
	s.applyFused(ctx, fb)
	if fb.err != nil {
		t.Fatal(fb.err)
	}
}

// settleAll checkpoints and runs the deadline checks, as Run does.
func settleAll(ctx context.Context, t *testing.T, s *Stage) {
	t.Helper()
	for range 3 { // a checkpoint moves the watermark, which may pass more deadlines
		if err := s.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.expire(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

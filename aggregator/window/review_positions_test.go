package window

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/event"
)

// Review of the positions the checkpoints keep (applied.go).

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

// Fused, an EVENTS message handed again before the checkpoint that holds
// it is durable (its ack wait passed while the checkpoint was written, as
// the MATCHES path's holds allows for) is not held by Applied, which
// reads the durable positions only: the rule filter evaluates it again
// and hands its matches to Apply. runFused then calls take for the
// message, which says the epoch holds it, but ignores the answer and
// applies every match of the batch: the message's matches are applied
// twice. The MATCHES path (handle) skips such a message.
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

	var waits []<-chan error
	for round := range 2 { // the second: handed again, its epoch not yet durable
		if held := h.s.Applied(msgs); held != nil && held[0] {
			t.Fatalf("round %d: held before any checkpoint", round)
		}
		ms := make([]event.Match, 0, len(c.batches[0]))
		for _, m := range c.batches[0] {
			ms = append(ms, *m)
		}
		wait, err := h.s.Apply(ctx, ms, c.batches[0][len(c.batches[0])-1].At().UnixNano(), 0, msgs)
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, background(wait))
		waitFor(ctx, t, "the batch applied", func() bool {
			var n int
			h.locked(func() { n = h.s.cur.batches })
			return n == round+1
		})
	}
	h.checkpoint(ctx, t)
	for _, w := range waits {
		if err := recv(t, w, "wait"); err != nil {
			t.Fatal(err)
		}
	}
	_, got := h.pub.published()
	if !slices.Equal(got, want) {
		t.Errorf("alerts %v, want %v (applied once)", got, want)
	}
	if st := h.stored(t, h.sk(t, "few", "h1")); string(st) != string(wantState) {
		t.Errorf("stored state differs from the state of the matches applied once: the message handed again was applied twice")
	}
	if n := h.verdict("duplicate"); n != 0 {
		t.Errorf("%v duplicate verdicts: the message handed again was applied twice", n)
	}
}

package window

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/event"
)

// MATCHES messages JetStream hands again (a crash after their checkpoint,
// an ack timeout) are not applied again: the stage skips every message at
// or before the newest it applied, counts it, and still lets it move the
// watermark. Through handle, with real JetStream messages.
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
	cons, err := js.CreateConsumer(ctx, bus.StreamMatches, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != 2 {
		t.Fatalf("fetched %d messages, want 2", len(msgs))
	}
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
	// What a restart starts from: the position the checkpoints hold.
	md, err := msgs[1].Metadata()
	if err != nil {
		t.Fatal(err)
	}
	s2 := storedThrough(t, h)
	if s2 != md.Sequence.Stream {
		t.Errorf("a restart reads the durable position %d, want %d", s2, md.Sequence.Stream)
	}
}

// storedThrough is the consumer position a restart of h's stage reads
// back from its state log and Badger.
func storedThrough(t *testing.T, h *harness) uint64 {
	t.Helper()
	st := &store{db: h.s.db, js: h.s.js, log: h.s.log, instance: h.s.instance}
	if err := st.loadLog(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	return st.durableThrough
}

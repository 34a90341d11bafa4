package filter

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/bus/bustest"
	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
)

// review15Filter runs the rule filter over what EVENTS holds until it is
// drained, and returns the DEADLETTER messages by subject.
func review15Filter(ctx context.Context, t *testing.T, b *bus.Bus, publish func()) map[string][]*jetstream.RawStreamMsg {
	t.Helper()
	_, set, logger := openAnyBus(ctx, t)
	publish()
	s, err := New(b, set, engine.Lateness{AllowedLateness: time.Hour}, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	stop := bustest.Run(ctx, t, s.Run)
	bustest.WaitDrained(ctx, t, b, bus.StreamEvents)
	stop()
	dead := map[string][]*jetstream.RawStreamMsg{}
	bustest.ReadStream(ctx, t, b, bus.StreamDeadLetter, func(m *jetstream.RawStreamMsg) {
		dead[m.Subject] = append(dead[m.Subject], m)
	})
	return dead
}

// A publisher on events.> (an external NATS) sends one 11-byte forged
// compressed batch: 0xB2 and S2 of 2,000 zero bytes, 2,000 empty records.
// The rule filter dead-letters each (a synchronous publish each): one
// message of a few bytes must not become thousands of dead letters (with
// 1 MiB of zeros, 13 bytes become 1,048,576).
func TestReview15ForgedBatchFloodsDeadLetters(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := bustest.Open(ctx, t)
	forged := append([]byte{0xB2}, s2.Encode(nil, make([]byte, 2000))...)
	dead := review15Filter(ctx, t, b, func() {
		if _, err := b.JetStream().Publish(ctx, "events.forged", forged); err != nil {
			t.Fatal(err)
		}
	})
	if n := len(dead["deadletter.filter"]); n > len(forged) {
		t.Errorf("a %d-byte EVENTS message became %d dead letters", len(forged), n)
	}
}

// A compressed EVENTS batch (the publisher's) with one record damaged
// among good ones: the good events are evaluated, and the dead letter
// holds exactly the damaged record's bytes, though it was read from the
// pooled buffer the batch was decompressed into (reused by the next
// batch before the dead letter is read back).
func TestReview15BadRecordOfCompressedBatchDeadLetteredIntact(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := bustest.Open(ctx, t)
	damaged := append([]byte{0x7f}, bytes.Repeat([]byte("damaged record "), 10)...)
	at := time.Now().UTC().Truncate(time.Second)
	var want []string
	batch := func(k int, withBad bool) []byte {
		out := bus.NewBatch()
		for i := range 300 {
			if withBad && i == 150 {
				out = bus.AppendRecord(out, damaged)
			}
			ev := &event.Event{ID: fmt.Sprintf("b%d-e%03d", k, i), Source: "syslog", Host: fmt.Sprintf("host%d", i%7),
				Time: at, Received: at, Message: fmt.Sprintf("Failed password for admin%d from 198.51.100.%d", i, i%250)}
			want = append(want, ev.ID)
			out = bus.AppendRecord(out, event.AppendEvent(nil, ev))
		}
		return bus.Compress(out)
	}
	dead := review15Filter(ctx, t, b, func() {
		for k := range 6 {
			data := batch(k, k%2 == 0)
			if data[0] != 0xB2 {
				t.Fatal("not compressed")
			}
			if _, err := b.JetStream().Publish(ctx, "events.syslog", bytes.Clone(data)); err != nil {
				t.Fatal(err)
			}
			bus.FreeBatch(data)
		}
	})
	got := dead["deadletter.filter"]
	if len(got) != 3 {
		t.Fatalf("%d dead letters, want 3", len(got))
	}
	for _, m := range got {
		if !bytes.Equal(m.Data, damaged) {
			t.Errorf("dead letter holds %q, want the damaged record %q", m.Data, damaged)
		}
	}
	matched := map[string]int{}
	bustest.ReadStream(ctx, t, b, bus.StreamMatches, func(m *jetstream.RawStreamMsg) {
		err := bus.DecodeMatches(m.Data, func(m *event.Match) error {
			matched[m.EventID]++
			return nil
		}, func(_ []byte, err error) error { return err })
		if err != nil {
			t.Fatal(err)
		}
	})
	for _, id := range want {
		if matched[id] != 1 {
			t.Errorf("event %s matched %d times, want once", id, matched[id])
		}
	}
	if len(matched) != len(want) {
		t.Errorf("%d events matched, want %d", len(matched), len(want))
	}
}

// MATCHES refuses the filter's publishes for a while (full: MaxMsgs, new
// discarded), so batches fail after some partitions' compressed messages
// went out (fail, undoAfter: pt.drop, the batch evaluated again with the
// buffers Compress gave back to the pool handed out anew). Once MATCHES
// takes them, every message reads whole: each match is of an event that
// was sent, under its own key, and every event is matched.
func TestReview15RefusedMatchesAreRebuiltWhole(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for retries")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	b := bustest.Open(ctx, t)
	js := b.JetStream()
	st, err := js.Stream(ctx, bus.StreamMatches)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	full := info.Config
	full.MaxMsgs = 3
	if _, err := js.UpdateStream(ctx, full); err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC().Truncate(time.Second)
	host := map[string]string{}
	_, set, logger := openAnyBus(ctx, t)
	for k := range 8 {
		var evs []*event.Event
		for i := range 400 {
			ev := &event.Event{ID: fmt.Sprintf("b%d-e%03d", k, i), Source: "syslog", Host: fmt.Sprintf("host%03d", (i*7+k)%97),
				Time: at, Received: at, Message: fmt.Sprintf("Failed password for admin%d from 198.51.100.%d port %d ssh2", i%40, i%250, 40000+i)}
			host[ev.ID] = ev.Host
			evs = append(evs, ev)
		}
		if err := b.PublishEvents(ctx, evs); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(b, set, engine.Lateness{AllowedLateness: time.Hour}, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	stop := bustest.Run(ctx, t, s.Run)
	time.Sleep(2 * time.Second) // batches fail, are handed again
	if _, err := js.UpdateStream(ctx, info.Config); err != nil {
		t.Fatal(err)
	}
	bustest.WaitDrained(ctx, t, b, bus.StreamEvents)
	stop()
	matched := map[string]int{}
	compressed, msgs := 0, 0
	bustest.ReadStream(ctx, t, b, bus.StreamMatches, func(m *jetstream.RawStreamMsg) {
		msgs++
		if m.Data[0] == 0xB2 {
			compressed++
		}
		err := bus.DecodeMatches(m.Data, func(m *event.Match) error {
			h, ok := host[m.EventID]
			if !ok || m.Key != "host="+h {
				return fmt.Errorf("match of event %q under key %q (its host %q)", m.EventID, m.Key, h)
			}
			matched[m.EventID]++
			return nil
		}, func(_ []byte, err error) error { return err })
		if err != nil {
			t.Fatalf("MATCHES message %d: %v", m.Sequence, err)
		}
	})
	for id := range host {
		if matched[id] == 0 {
			t.Fatalf("event %s not matched", id)
		}
	}
	if compressed == 0 {
		t.Error("no MATCHES message was compressed")
	}
	t.Logf("%d MATCHES messages (%d compressed), %d matches for %d events", msgs, compressed, func() (n int) {
		for _, c := range matched {
			n += c
		}
		return
	}(), len(host))
}

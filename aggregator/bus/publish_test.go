package bus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// runPublisher starts a publisher on b; done receives what its Run
// returns.
func runPublisher(ctx context.Context, t *testing.T, b *Bus, cfg PublisherConfig) (*Publisher, chan error) {
	t.Helper()
	p, err := NewPublisher(b, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	return p, done
}

// publishNumbered publishes n events numbered e000000..., each with its
// number and pad as its message (before(i), if not nil, runs before the
// i-th), then flushes and closes p and waits for its Run (done).
func publishNumbered(ctx context.Context, t *testing.T, p *Publisher, done chan error, n int, pad string, before func(i int)) {
	t.Helper()
	for i := range n {
		if before != nil {
			before(i)
		}
		ev := &event.Event{ID: fmt.Sprintf("e%06d", i), Source: "syslog", Message: fmt.Sprintf("%06d %s", i, pad), Time: time.Unix(int64(i), 0), Received: time.Unix(int64(i), 0)}
		if err := p.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// readNumbered reads every EVENTS message (each, if not nil, sees it
// first) and returns how many times each of publishNumbered's n events is
// there, failing on one that does not hold its own message under its own
// subject.
func readNumbered(ctx context.Context, t *testing.T, b *Bus, n int, pad string, each func(m *jetstream.RawStreamMsg)) []int {
	t.Helper()
	s, err := b.JetStream().Stream(ctx, StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := make([]int, n)
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if each != nil {
			each(m)
		}
		err = DecodeEvents(m.Data, func(ev *event.Event) error {
			var i int
			if _, err := fmt.Sscanf(ev.ID, "e%06d", &i); err != nil || i < 0 || i >= n {
				return fmt.Errorf("event id %q", ev.ID)
			}
			if want := fmt.Sprintf("%06d %s", i, pad); ev.Message != want || "events."+ev.Source != m.Subject {
				return fmt.Errorf("event %s holds %.20q under %s", ev.ID, ev.Message, m.Subject)
			}
			seen[i]++
			return nil
		}, func(rec []byte, err error) error { return err })
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
	}
	return seen
}

// TestFlushWaitsForTheAcks: Flush returns only once everything queued
// before it is acked by JetStream: what RELP's acknowledgements rest on.
func TestFlushWaitsForTheAcks(t *testing.T) {
	b := openTestBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, done := runPublisher(ctx, t, b, PublisherConfig{Capacity: 64, Batch: 16})
	for round := 1; round <= 3; round++ {
		for i := range 500 {
			ev := &event.Event{ID: fmt.Sprintf("e%d-%d", round, i), Source: "syslog", Message: "m", Time: time.Now(), Received: time.Now()}
			if i == 250 {
				if err := p.DeadLetter(ctx, "syslog", "oversize: test", []byte("raw"), "127.0.0.1:1"); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Publish(ctx, ev); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if got := testutil.ToFloat64(p.events); got != float64(500*round) {
			t.Fatalf("round %d: Flush returned with %v events acked, want %d", round, got, 500*round)
		}
	}
	p.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Flush after Close: %v", err)
	}
}

// TestRecycledBatchesArriveWhole: the publisher reuses a message's bytes
// for a later message once JetStream acked it (NewBatch, FreeBatch), and
// an event's encoding once it is copied into a message (eventBufs). Every
// event of many full messages, published while the next ones are being
// packed, arrives as it was sent: a buffer handed out again while still
// in use (a batch freed twice, an encoding freed before it was copied)
// arrives holding another event's bytes. (A batch freed before its
// ack would not show here: the embedded server's client copies what it
// sends at once.)
func TestRecycledBatchesArriveWhole(t *testing.T) {
	b := openTestBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, done := runPublisher(ctx, t, b, PublisherConfig{})
	const n = 20_000
	pad := strings.Repeat("x", 200) // ~1,200 events a message
	publishNumbered(ctx, t, p, done, n, pad, nil)
	for i, c := range readNumbered(ctx, t, b, n, pad, nil) {
		if c == 0 {
			t.Fatalf("event %d missing", i)
		}
	}
}

package bus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// TestFlushWaitsForTheAcks: Flush returns only once everything queued
// before it is acked by JetStream: what RELP's acknowledgements rest on.
func TestFlushWaitsForTheAcks(t *testing.T) {
	b := openTestBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := NewPublisher(b, PublisherConfig{Capacity: 64, Batch: 16}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
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

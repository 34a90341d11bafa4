// Package bustest gives tests a real embedded NATS server with JetStream
// (Outpost's streams, in a temp dir) and reads what the streams hold.
package bustest

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-siem/outpost/aggregator/bus"
)

// Open starts an embedded bus with the default config in a temp dir of
// t, closed when t ends.
func Open(ctx context.Context, t testing.TB) *bus.Bus {
	t.Helper()
	var cfg bus.Config
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := bus.Open(ctx, cfg, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// ReadStream calls fn with every message stream holds, oldest first.
func ReadStream(ctx context.Context, t testing.TB, b *bus.Bus, stream string, fn func(*jetstream.RawStreamMsg)) {
	t.Helper()
	st, err := b.JetStream().Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		return
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("reading %s message %d: %v", stream, seq, err)
		}
		fn(m)
	}
}

// WaitDrained waits, until ctx ends, for a work-queue stream (EVENTS,
// MATCHES) to hold no message: every batch of it was acked.
func WaitDrained(ctx context.Context, t testing.TB, b *bus.Bus, stream string) {
	t.Helper()
	st, err := b.JetStream().Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	for {
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s still holds %d messages", stream, info.State.Msgs)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Run runs a stage's Run (run) until the returned func is called; that
// func waits for Run to return and fails t on its error.
func Run(ctx context.Context, t testing.TB, run func(context.Context) error) (stop func()) {
	t.Helper()
	runCtx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- run(runCtx) }()
	return func() {
		cancel()
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

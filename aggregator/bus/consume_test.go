package bus

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func openTestBus(t *testing.T) *Bus {
	t.Helper()
	var cfg Config
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := Open(context.Background(), cfg, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// A failed wait makes Consume hand that batch and the one handled on top of
// it again, in order, before anything newer; a handler error retries just
// that batch. Every message ends acked once its batch succeeded.
func TestConsumeAsyncRetriesInOrder(t *testing.T) {
	b := openTestBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 7
	for i := range n {
		if _, err := b.JetStream().Publish(ctx, "events.test", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var handled, waited []string
	failWait := map[string]bool{"2": true}   // its first wait fails
	failHandle := map[string]bool{"5": true} // its first handling fails
	done := make(chan struct{})
	h := func(ctx context.Context, msgs []jetstream.Msg) (func() error, error) {
		mu.Lock()
		defer mu.Unlock()
		p := string(msgs[0].Data())
		handled = append(handled, p)
		if failHandle[p] {
			delete(failHandle, p)
			return nil, errors.New("handling failed")
		}
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			waited = append(waited, p)
			if failWait[p] {
				delete(failWait, p)
				return errors.New("commit failed")
			}
			if p == strconv.Itoa(n-1) {
				close(done)
			}
			return nil
		}, nil
	}
	errc := make(chan error, 1)
	cctx, stop := context.WithCancel(ctx)
	go func() {
		errc <- b.ConsumeAsync(cctx, ConsumerConfig{Stream: StreamEvents, Durable: "test", Batch: 1}, slog.New(slog.NewTextHandler(io.Discard, nil)), h)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("not every batch succeeded in time")
	}
	// The last wait ran; its ack follows before the next fetch.
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := b.JetStream().Consumer(ctx, StreamEvents, "test")
		if err != nil {
			t.Fatal(err)
		}
		if info.CachedInfo().NumAckPending == 0 && info.CachedInfo().NumPending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("messages left unacked: %+v", info.CachedInfo())
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"0", "1", "2", "3", "2", "3", "4", "5", "5", "6"}
	if !slices.Equal(handled, want) {
		t.Errorf("handled %v, want %v", handled, want)
	}
	// 3's first wait is still called (to drain it) although 3 is redone.
	wantWaits := []string{"0", "1", "2", "3", "2", "3", "4", "5", "6"}
	if !slices.Equal(waited, wantWaits) {
		t.Errorf("waited %v, want %v", waited, wantWaits)
	}
}

func TestFetchSize(t *testing.T) {
	cc := ConsumerConfig{Batch: 512, BatchBytes: 4 << 20}
	for _, c := range []struct {
		avg  float64
		want int
	}{{0, 16}, {4096, 512}, {256 << 10, 16}, {64 << 10, 64}, {100 << 20, 1}} {
		if got := cc.fetchSize(c.avg); got != c.want {
			t.Errorf("average %v bytes: fetch %d, want %d", c.avg, got, c.want)
		}
	}
	if got := (&ConsumerConfig{Batch: 7}).fetchSize(123); got != 7 {
		t.Errorf("without BatchBytes: fetch %d, want Batch", got)
	}
}

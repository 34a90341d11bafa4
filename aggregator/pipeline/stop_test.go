package pipeline

import (
	"context"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/forwarder/receiver"
)

// A stop that comes while the stages are still starting (the windows
// reading their state log back, the consumers being made) is a clean
// stop, not a stage failure: CI once saw "windows: reading the window
// state log: context canceled" from a test that stopped 0.9 s after its
// start.
func TestStopWhileStartingIsClean(t *testing.T) {
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer siem.Close()
	dir := t.TempDir()
	// Stopped before Run, then at points through the start.
	for i, after := range []time.Duration{0, 0, 5 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond} {
		cfg := testConfig(t, dir, siem.Addr().String())
		ctx, cancel := context.WithCancel(context.Background())
		p, err := Open(ctx, cfg, "test", testLogger(t))
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if after == 0 {
			cancel() // every stage starts with its context ended
		}
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		time.Sleep(after)
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("round %d (stopped after %v): Run: %v", i, after, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: pipeline did not stop within 30s", i)
		}
	}
}

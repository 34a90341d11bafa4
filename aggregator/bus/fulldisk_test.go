package bus

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/state"
)

// smallDisk mounts a tmpfs of size bytes on a temp dir, or skips the test
// where that is not allowed (not root, no mount).
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fill writes a ballast file until the filesystem is full.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "ballast")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for i := 0; i < 1<<14; i++ {
		if _, err := f.Write(chunk); err != nil {
			if !strings.Contains(err.Error(), "no space left") {
				t.Fatal(err)
			}
			return path
		}
	}
	t.Fatal("the disk never filled")
	return ""
}

// TestJetStreamFullDiskRecovers fills the embedded JetStream's real disk:
// publishes must fail within publish_timeout (counted), never hang, and
// succeed again once space is freed, without a restart.
func TestJetStreamFullDiskRecovers(t *testing.T) {
	dir := smallDisk(t, "24m")
	cfg := Config{PublishTimeout: 300 * time.Millisecond}
	for _, s := range []*StreamLimits{&cfg.Streams.Events, &cfg.Streams.Matches, &cfg.Streams.Alerts, &cfg.Streams.DeadLetter} {
		s.MaxBytes = 4 << 20
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := Open(context.Background(), cfg, dir, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The appliance's disk guard, at first with no floor: the disk fills
	// up behind its back (between two checks, or by another process).
	guard, err := state.NewDiskGuard(dir, state.DiskConfig{MinFree: 0, CheckInterval: 20 * time.Millisecond}, testLog(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = guard.Run(ctx) }()
	b.SetGate(guard)
	b.watchEvery = 100 * time.Millisecond
	watched := make(chan struct{})
	go func() { defer close(watched); _ = b.Watch(ctx) }()
	defer func() { cancel(); <-watched }()
	ballast := fill(t, dir)

	payload := string(bytes.Repeat([]byte("x"), 32<<10))
	batch := func(i int) []*event.Event {
		return []*event.Event{{ID: "e" + string(rune('a'+i%26)), Source: "syslog", Message: payload, Time: time.Now(), Received: time.Now()}}
	}
	var failed bool
	for i := 0; i < 200 && !failed; i++ {
		start := time.Now()
		err := b.PublishEvents(ctx, batch(i))
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("a publish on a full disk took %s", took)
		}
		failed = err != nil
	}
	if !failed {
		t.Fatal("200 publishes of 32KiB on a full disk all succeeded")
	}
	// The publish error handler runs on the NATS client's own goroutine:
	// the count may land a moment after PublishEvents returned.
	waitUntil(t, "the failed publish to be counted in outpost_bus_publish_errors_total", func() bool {
		errs := 0.0
		for _, kind := range []string{"timeout", "unavailable", "rejected", "other"} {
			errs += testutil.ToFloat64(b.metrics().pubErrors.WithLabelValues(StreamEvents, kind))
		}
		return errs > 0
	})
	waitUntil(t, "Check to report the unhealthy stream", func() bool { return b.Check() != nil })
	// Now a floor that fits this small disk: writers wait, and JetStream
	// is not restarted into a full disk.
	if err := guard.SetMinFree(1 << 20); err != nil {
		t.Fatal(err)
	}
	if !guard.IngestHeld() {
		t.Fatal("the guard does not see the full disk")
	}

	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		err := b.PublishEvents(ctx, batch(i))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("publishing still fails 10s after space was freed: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitUntil(t, "Check to report JetStream healthy", func() bool { return b.Check() == nil })
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

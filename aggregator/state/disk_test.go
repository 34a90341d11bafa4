package state

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/outpost-siem/outpost/aggregator/config"
)

// TestDiskGuardLevels measures a real t.TempDir() with floors above and
// below its free space.
func TestDiskGuardLevels(t *testing.T) {
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := config.ByteSize(st.Bavail * uint64(st.Bsize))
	cfg := DiskConfig{MinFree: 512 << 20}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	g, err := NewDiskGuard(dir, cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name         string
		floor        config.ByteSize
		ingest, proc bool
	}{
		{"enough space", 512 << 20, false, false},
		{"below the floor", free + free/2, true, false},
		{"below half the floor", 3 * free, true, true},
		{"space back", 512 << 20, false, false},
	} {
		changed := g.Changed()
		before := g.IngestHeld()
		if err := g.SetMinFree(tc.floor); err != nil {
			t.Fatal(err)
		}
		if g.IngestHeld() != tc.ingest || g.ProcessHeld() != tc.proc {
			t.Errorf("%s: held ingest %v, process %v; want %v, %v", tc.name, g.IngestHeld(), g.ProcessHeld(), tc.ingest, tc.proc)
		}
		if err := g.Check(); (err != nil) != tc.ingest || (err != nil && !strings.Contains(err.Error(), "disk.min_free")) {
			t.Errorf("%s: Check() = %v", tc.name, err)
		}
		if before != tc.ingest {
			select {
			case <-changed:
			case <-time.After(time.Second):
				t.Errorf("%s: Changed not closed", tc.name)
			}
		}
	}
	if err := (&DiskConfig{MinFree: 1 << 20}).Validate(); err == nil {
		t.Error("disk.min_free of 1MiB accepted")
	}
}

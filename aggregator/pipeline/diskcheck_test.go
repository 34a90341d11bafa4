package pipeline

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/outpost-siem/outpost/aggregator/config"
)

// TestCheckDiskStreamsLargerThanDisk: stream limits the filesystem can
// never hold are rejected by CheckDisk (check-config) and Open, with the
// numbers; limits that fit pass.
func TestCheckDiskStreamsLargerThanDisk(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "not", "yet")
	cfg := testConfig(t, dir, "127.0.0.1:9")
	if err := CheckDisk(cfg); err != nil {
		t.Fatalf("default limits: %v", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(t.TempDir(), &st); err != nil {
		t.Fatal(err)
	}
	cfg.NATS.Streams.Events.MaxBytes = config.ByteSize(st.Blocks * uint64(st.Bsize))
	err := CheckDisk(cfg)
	if err == nil || !strings.Contains(err.Error(), "nats.streams: max_bytes add up to") {
		t.Fatalf("CheckDisk = %v, want the streams rejected", err)
	}
	if _, err := Open(context.Background(), cfg, "test", testLogger(t)); err == nil || !strings.Contains(err.Error(), "nats.streams") {
		t.Errorf("Open = %v, want the streams rejected", err)
	}
}

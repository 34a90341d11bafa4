package state

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestValueLogGivesBackOverwrittenStates: window states of 128 bytes or
// more live in the value log (Open), and a compaction of the window state
// log overwrites every one of them. The value log's garbage collection
// (RunGC) must give back the space of the states overwritten, or the data
// dir grows by every compaction's states until the disk guard stops the
// pipeline.
func TestValueLogGivesBackOverwrittenStates(t *testing.T) {
	if testing.Short() {
		t.Skip("writes ~250 MB")
	}
	dir := t.TempDir()
	cfg := Config{GCInterval: time.Second}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	db, err := Open(dir, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const keys, rounds, size = 40_000, 16, 400
	value := make([]byte, size)
	for round := range rounds {
		wb := db.NewWriteBatch()
		for k := range keys {
			copy(value, fmt.Sprintf("round %d key %d", round, k))
			if err := wb.Set([]byte(fmt.Sprintf("w/rule@fp\x00src_ip=10.%d.%d.%d", k>>16, k>>8&255, k&255)), value); err != nil {
				t.Fatal(err)
			}
		}
		if err := wb.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	written := int64(keys * rounds * size)
	before := valueLogBytes(t, dir)
	if before < written/2 {
		t.Fatalf("the value log takes %d bytes of the %d written: the states are not in it", before, written)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go db.RunGC(ctx)
	live := int64(keys * size)
	for valueLogBytes(t, dir) > 4*live+2*(64<<20) {
		if ctx.Err() != nil {
			t.Fatalf("the value log still takes %d bytes after 60 s of collection (%d before, %d live)", valueLogBytes(t, dir), before, live)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("value log: %d bytes before collection, %d after (%d live)", before, valueLogBytes(t, dir), live)
}

// valueLogBytes is the disk space Badger's value log files in dir take
// (their blocks: the files are sparse).
func valueLogBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".vlog") {
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(dir, e.Name()), &st); err == nil {
			n += st.Blocks * 512
		}
	}
	return n
}

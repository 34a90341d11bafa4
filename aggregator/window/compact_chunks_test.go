package window

import (
	"context"
	"maps"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// A compaction writes the states a few at a time and lets go of each chunk
// once Badger holds it, while batches go on reading states: a state let go
// of is read from Badger, and must be what the log held. The same stream
// through a stage whose compactions write everything at once, and through
// one whose compactions pause after every chunk of two while batches are
// applied, must give the same alerts and the same states.
func TestCompactionLettingGoOfChunksGivesTheSameStates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	batches := crashStream(11, 150)
	compactEveryCheckpoint := func(c *Config) { c.CacheKeys, c.CheckpointKeys, c.StateLog.Memory = 8, 8, 1 }

	ref := newCrashRun(t)
	ref.tweak = compactEveryCheckpoint
	s, stop := ref.stage(ctx, nil)
	s.compactChunk = 1 << 30
	drive(ctx, t, s, batches)
	stop()
	wantIDs, wantStates := ref.ids(), ref.states()
	if len(wantIDs) < 20 {
		t.Fatalf("only %d alerts: the stream tells nothing", len(wantIDs))
	}

	run := newCrashRun(t)
	run.tweak = compactEveryCheckpoint
	var chunks, readsMeanwhile atomic.Int64
	var s2 *Stage
	s2, stop2 := run.stage(ctx, func(step string) error {
		if step == "compact-half" {
			// Paused with a chunk let go of: the batches applied meanwhile
			// read the states not in memory from Badger or the log.
			// Up to 50 ms for one to come: a loaded machine may not
			// schedule the batches within a millisecond (once it did not:
			// "not exercised").
			chunks.Add(1)
			before := s2.badgerReads.Load()
			for range 50 {
				if time.Sleep(time.Millisecond); s2.badgerReads.Load() > before {
					break
				}
			}
			readsMeanwhile.Add(s2.badgerReads.Load() - before)
		}
		return nil
	})
	s2.compactChunk = 2
	drive(ctx, t, s2, batches)
	stop2()
	t.Logf("%d chunks let go of before their compaction's end; %d states read from Badger meanwhile", chunks.Load(), readsMeanwhile.Load())
	// 21 chunks on a quiet machine; 13 once in CI, under the other
	// packages' load (fewer, larger compactions): both exercise it.
	if chunks.Load() < 8 || readsMeanwhile.Load() == 0 {
		t.Fatalf("%d chunks, %d reads from Badger during compactions: not exercised", chunks.Load(), readsMeanwhile.Load())
	}
	if got := run.ids(); !slices.Equal(got, wantIDs) {
		t.Errorf("alerts differ from the run compacting at once:\n got %d: %v\nwant %d: %v", len(got), got, len(wantIDs), wantIDs)
	}
	if got := run.states(); !maps.Equal(got, wantStates) {
		t.Errorf("%d of %d states differ from the run compacting at once", logStateDiff(t, got, wantStates), len(wantStates))
	}
}

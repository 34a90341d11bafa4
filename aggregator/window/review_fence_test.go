package window

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/bus"
)

// The state log's fence (logRecord.after, store.logTail).

// logTail only grows (max in loadLog and merge): once messages leave the
// subject other than by the stage's purge (a STATELOG limit, here max_age
// on an idle stage; an operator's purge; STATELOG deleted and made again),
// the subject's last message is below it and the next append's fence
// fails. The Reset after it finds that, and reads the log whole, as a
// restart does, rather than from logStream+1, where nothing would lower
// logTail: the checkpoints that follow succeed. Here only the message a
// compaction kept goes (its record is in Badger: nothing is lost).
func TestFenceAgreesAgainAfterTheSubjectLosesItsLastMessage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, func(c *Config) { c.StateLog.Memory = 1 }) // compacts after every checkpoint
	for i := range 3 {
		h.commit(ctx, t, match("many", fmt.Sprintf("h%d", i), fmt.Sprintf("e%d", i), t0.Add(time.Duration(i)*time.Second)))
	}
	// Until one compaction covers every record (one skipped while another
	// ran leaves its states logged).
	waitFor(ctx, t, "the log compacted", func() bool {
		h.s.mu.Lock()
		defer h.s.mu.Unlock()
		if h.s.compactDone != nil {
			return false
		}
		if len(h.s.logged) == 0 {
			return true
		}
		h.s.maybeCompact(false)
		return false
	})
	js := h.s.js
	if n := logMessages(t, js); n != 1 {
		t.Fatalf("%d log messages after the compactions, want the one kept", n)
	}
	// A limit on STATELOG: the kept message, compacted, ages out.
	stream, err := js.Stream(ctx, bus.StreamStateLog)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	cfg.MaxAge, cfg.Duplicates = time.Second, time.Second
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the kept message aged out", func() bool { return logMessages(t, js) == 0 })

	for try := range 3 {
		if _, err := h.apply(ctx, match("many", "x", fmt.Sprintf("x%d", try), t0.Add(time.Minute))); err != nil {
			t.Fatal(err)
		}
		err := h.s.Checkpoint(ctx)
		if err == nil {
			return
		}
		t.Logf("try %d: %v", try, err)
		h.reset(ctx, t) // as the consumer does before it hands the batch again
	}
	h.s.mu.Lock()
	tail := h.s.logTail
	h.s.mu.Unlock()
	t.Errorf("every checkpoint fails: the fence expects stream sequence %d, the subject holds no message, and Reset never lowers it", tail)
}

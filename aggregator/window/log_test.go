package window

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/state"
)

// keyedStates is what Badger holds under the state keys alone (w/),
// without the log, with each key's expiry.
func keyedStates(t *testing.T, db *state.DB) (states map[string]string, expires map[string]uint64) {
	t.Helper()
	states, expires = map[string]string{}, map[string]uint64{}
	err := db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(statePrefix)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			states[string(it.Item().Key())] = string(v)
			expires[string(it.Item().Key())] = it.Item().ExpiresAt()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return states, expires
}

// logMessages counts the state log's messages in STATELOG.
func logMessages(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	stream, err := js.Stream(context.Background(), bus.StreamStateLog)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// The checkpoints append the states to the log and write none under its
// key; a restart reads them back from it; a compaction writes them under
// their keys, with their TTL, and deletes the records, and what a restart
// reads is the same before and after.
func TestStateLogHoldsTheStatesUntilCompacted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := newCrashRun(t)
	s, stop := run.stage(ctx, nil)
	drive(ctx, t, s, crashStream(7, 150))
	stop()
	want := run.states()
	if len(want) < 100 {
		t.Fatalf("only %d states: the stream tells nothing", len(want))
	}
	if keyed, _ := keyedStates(t, run.db); len(keyed) != 0 {
		t.Fatalf("%d states written under their keys without a compaction", len(keyed))
	}
	if logMessages(t, run.bus.JetStream()) == 0 {
		t.Fatal("no log record")
	}

	s2, stop2 := run.stage(ctx, nil)
	defer stop2()
	var live int64
	s2.mu.Lock()
	logged := len(s2.logged)
	live = s2.keysTotal.Load()
	s2.mu.Unlock()
	if logged != len(want) {
		t.Fatalf("a restart read %d states from the log, want %d", logged, len(want))
	}
	if live != int64(len(want)) {
		t.Fatalf("%d live keys counted after a restart, want %d", live, len(want))
	}

	// Compact now (every trigger at its least).
	s2.mu.Lock()
	s2.cfg.StateLog.Memory = 1
	s2.maybeCompact(false)
	done := s2.compactDone
	s2.mu.Unlock()
	if done == nil {
		t.Fatal("no compaction started")
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("the compaction did not end")
	}
	keyed, expires := keyedStates(t, run.db)
	if !maps.Equal(keyed, want) {
		t.Fatalf("after the compaction, %d keyed states; want the %d a restart read", len(keyed), len(want))
	}
	// The compacted record's last message stays: the next append's fence
	// expects it (logRecord.after).
	if n := logMessages(t, run.bus.JetStream()); n != 1 {
		t.Fatalf("%d log messages left after the compaction, want the last one", n)
	}
	now := time.Now()
	for sk, exp := range expires {
		rule, _, _, _ := parseStateKey(sk)
		ttl := s2.ttl(run.set.Rule(rule))
		if at := time.Unix(int64(exp), 0); at.Before(now.Add(ttl-time.Minute)) || at.After(now.Add(ttl)) {
			t.Fatalf("%s expires at %s, want about now + its TTL %s", sk, at, ttl)
		}
	}
	if got := storedStates(t, run.db, run.bus.JetStream()); !maps.Equal(got, want) {
		t.Fatal("the states a restart reads changed with the compaction")
	}
	mark, err := s2.readUint(logMarkKey)
	if err != nil || mark == 0 {
		t.Fatalf("compaction mark %d, %v", mark, err)
	}
	if s2.logBytes.Load() != 0 {
		t.Fatalf("%d bytes of logged states still counted after the compaction", s2.logBytes.Load())
	}
}

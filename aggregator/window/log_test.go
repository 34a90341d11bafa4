package window

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go"
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

// statelogMessages reads every message of STATELOG.
func statelogMessages(ctx context.Context, t *testing.T, js jetstream.JetStream) []*jetstream.RawStreamMsg {
	t.Helper()
	stream, err := js.Stream(ctx, bus.StreamStateLog)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// logOfOneRun drives a crash run's stage with records of one part each
// (as large as a checkpoint makes them), stops it, and returns the run,
// its log's subject, its states and its log's messages.
func logOfOneRun(ctx context.Context, t *testing.T) (*crashRun, string, map[string]string, []*jetstream.RawStreamMsg) {
	t.Helper()
	run := newCrashRun(t)
	s, stop := run.stage(ctx, nil)
	s.mu.Lock()
	s.logChunk = logChunk
	s.mu.Unlock()
	drive(ctx, t, s, crashStream(7, 150))
	subject := s.subject()
	stop()
	msgs := statelogMessages(ctx, t, run.bus.JetStream())
	if len(msgs) == 0 {
		t.Fatal("no log record")
	}
	return run, subject, run.states(), msgs
}

// appendAgain replaces subject's messages with msgs, each with its log
// headers but the format and the body that again gives it.
func appendAgain(ctx context.Context, t *testing.T, js jetstream.JetStream, subject string, msgs []*jetstream.RawStreamMsg,
	again func(i int, m *jetstream.RawStreamMsg) (format string, data []byte)) {
	t.Helper()
	stream, err := js.Stream(ctx, bus.StreamStateLog)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		msg := nats.NewMsg(subject)
		msg.Header.Set(logSeqHeader, m.Header.Get(logSeqHeader))
		msg.Header.Set(logPartHeader, m.Header.Get(logPartHeader))
		var format string
		format, msg.Data = again(i, m)
		msg.Header.Set(logFormatHeader, format)
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
}

// restartLogged starts run's stage again and returns how many states it
// read from the log.
func restartLogged(ctx context.Context, t *testing.T, run *crashRun) int {
	t.Helper()
	s, stop := run.stage(ctx, nil)
	t.Cleanup(stop)
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.logged)
}

// The log's parts are compressed (format 3): fewer bytes for JetStream to
// write, cache and read back than the records hold. And a log written by
// the version before, parts not compressed (format 2), reads back into
// the same states: here the same records, uncompressed and appended again
// in that format.
func TestStateLogIsCompressedAndReadsTheFormatBefore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run, subject, want, msgs := logOfOneRun(ctx, t)
	stored, plain := 0, 0
	var bodies [][]byte
	for _, m := range msgs {
		body := m.Data
		if f := m.Header.Get(logFormatHeader); f == logFormat {
			var err error
			if body, err = s2.Decode(nil, m.Data); err != nil {
				t.Fatalf("a log message does not uncompress: %v", err)
			}
		} else if f != logFormatPlain || len(body) >= minCompressed {
			t.Fatalf("a log message of %d bytes in format %q", len(body), f)
		}
		stored, plain = stored+len(m.Data), plain+len(body)
		bodies = append(bodies, body)
	}
	t.Logf("%d log messages: %d bytes stored for %d", len(msgs), stored, plain)
	if stored*3 > plain*2 {
		t.Errorf("the log's parts take %d bytes for %d: not compressed", stored, plain)
	}
	// The version before: the same records, parts as they are.
	appendAgain(ctx, t, run.bus.JetStream(), subject, msgs, func(i int, _ *jetstream.RawStreamMsg) (string, []byte) {
		return logFormatPlain, bodies[i]
	})
	if logged := restartLogged(ctx, t, run); logged != len(want) {
		t.Fatalf("a restart read %d states from the log of the version before, want %d", logged, len(want))
	}
	if got := run.states(); !maps.Equal(got, want) {
		t.Fatalf("read back from the log of the version before: %d states differ from the %d written", len(got), len(want))
	}
}

// A compressed part that does not uncompress (damaged on disk) ends its
// record there, as a missing part does: a restart reads the records
// before it and does not fail or panic.
func TestStateLogDamagedCompressedPartEndsItsRecord(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run, subject, want, msgs := logOfOneRun(ctx, t)
	last := len(msgs) - 1
	for last >= 0 && msgs[last].Header.Get(logFormatHeader) != logFormat {
		last--
	}
	if last < 1 {
		t.Fatal("no compressed part after the first message")
	}
	appendAgain(ctx, t, run.bus.JetStream(), subject, msgs[:last+1], func(i int, m *jetstream.RawStreamMsg) (string, []byte) {
		if i == last {
			return logFormat, append([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, m.Data[min(5, len(m.Data)):]...) // a length past any part
		}
		return m.Header.Get(logFormatHeader), m.Data
	})
	if logged := restartLogged(ctx, t, run); logged == 0 || logged > len(want) {
		t.Fatalf("a restart read %d states from a log whose last record is damaged; want some of the %d, the records before it", logged, len(want))
	}
}

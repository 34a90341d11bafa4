package window

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/internal/wire"
)

// The state log. A checkpoint does not write each state it changed under
// its own key in Badger: it appends them, encoded one after the other, as
// one record to the STATELOG stream (a few messages of up to logChunk),
// the way a stream processor's changelog does. A state changed by every
// checkpoint is then part of one append, not one LSM entry each time (at
// 100,000 keys, Badger's memtable puts, flushes and compactions of those
// entries bounded the whole pipeline: docs/benchmarks.md).
//
// What Outpost holds of the states is Badger's keyed states (w/ keys)
// overlaid by the log's records after the compaction mark (m/log), in
// order: a restart reads them back into memory (loadLog), and memory keeps
// the latest logged encoding of each state (logged) until a compaction
// writes them under their keys, writes the mark and purges the records it
// covered. A compaction runs beside the checkpoints, when the states
// logged since the last one take windows.state_log.memory, the records
// take windows.state_log.size, or windows.state_log.interval passed (which
// bounds what a restart reads).
//
// A crash at any point leaves a prefix of what was being written: records
// of a checkpoint not acked (its matches are redelivered and find the
// states already changed, as a half-written checkpoint of keyed states
// did), or keyed states written without their mark (the records after the
// old mark still overlay them: the same states). The log is in JetStream
// so that, with windows partitioned across several instances, a
// partition's new owner can read its states from a replicated stream.
//
//	STATELOG, subject statelog.windows, header Outpost-Log-Seq: the record's seq
//	  body: (state key, expiry, encoded state or none)...
//	m/log (Badger): the seq through which the keyed states hold the log (8 bytes BE)
const (
	logSubject   = "statelog.windows"
	logSeqHeader = "Outpost-Log-Seq"
	logMarkKey   = "m/log"
	// logChunk is the size a record's messages are cut at, well under
	// NATS's default max_payload (1 MiB).
	logChunk = 256 << 10
)

// logState is a state as the log holds it: encoded (engine.AppendState),
// or nil for a state emptied (deleted); expires is Badger's ExpiresAt for
// it (Unix seconds; 0 for none).
type logState struct {
	enc     []byte
	expires uint64
}

// size is what it costs in memory, with its key, for the byte budget.
func (l logState) size(sk string) int64 { return int64(len(sk) + len(l.enc) + coldOverhead) }

// expired reports whether Badger would no longer return it at now (Unix
// seconds).
func (l logState) expired(now uint64) bool { return l.expires != 0 && l.expires <= now }

// logRecord is one checkpoint's states, as appended to the log; last is
// the stream sequence of its last message, once acked.
type logRecord struct {
	seq   uint64
	chunk int // the size its messages are cut at

	keys   []string
	states []logState
	chunks [][]byte
	bytes  int64
	last   uint64
}

func (lr *logRecord) add(sk string, st logState) {
	lr.keys = append(lr.keys, sk)
	lr.states = append(lr.states, st)
	n := len(lr.chunks)
	if n == 0 || len(lr.chunks[n-1]) >= lr.chunk {
		lr.chunks = append(lr.chunks, make([]byte, 0, lr.chunk+lr.chunk/8))
		n++
	}
	c := wire.AppendString(lr.chunks[n-1], sk)
	c = wire.AppendUvarint(c, st.expires)
	c = wire.AppendUvarint(c, uint64(len(st.enc)))
	lr.chunks[n-1] = append(c, st.enc...)
}

// publish appends chunks (some of lr's) to STATELOG and waits for their
// acks.
func (lr *logRecord) publish(ctx context.Context, js jetstream.JetStream, chunks [][]byte) error {
	futures := make([]jetstream.PubAckFuture, 0, len(chunks))
	seq := strconv.FormatUint(lr.seq, 10)
	for _, c := range chunks {
		m := nats.NewMsg(logSubject)
		m.Header.Set(logSeqHeader, seq)
		m.Data = c
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("appending to the window state log: %w", err)
		}
		futures = append(futures, f)
		lr.bytes += int64(len(c))
	}
	for _, f := range futures {
		select {
		case ack := <-f.Ok():
			lr.last = max(lr.last, ack.Sequence)
		case err := <-f.Err():
			return fmt.Errorf("appending to the window state log: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// readLogChunk calls each for every state in a chunk, in order.
func readLogChunk(v []byte, each func(sk string, st logState)) error {
	r := wire.NewReader(v)
	for r.Err() == nil && len(r.Rest()) > 0 {
		sk := r.String()
		st := logState{expires: r.Uvarint()}
		if enc := r.Bytes(); len(enc) > 0 {
			st.enc = enc
		}
		if r.Err() == nil {
			each(sk, st)
		}
	}
	return r.Done()
}

// logLookup finds the latest logged state of sk not yet compacted.
func (s *store) logLookup(sk string) (logState, bool) {
	if st, ok := s.logged[sk]; ok {
		return st, true
	}
	st, ok := s.compacting[sk]
	return st, ok
}

// logAdd makes st the latest logged state of sk.
func (s *store) logAdd(sk string, st logState) {
	if old, ok := s.logged[sk]; ok {
		s.logBytes.Add(-old.size(sk))
	}
	s.logged[sk] = st
	s.logBytes.Add(st.size(sk))
}

// loadLog reads the log after the compaction mark into memory (logged):
// at start, and after a failure, when what is stored is the truth again.
// Call with no compaction running.
func (s *store) loadLog(ctx context.Context) error {
	mark, err := s.readUint(logMarkKey)
	if err != nil {
		return err
	}
	s.logged, s.compacting = map[string]logState{}, nil
	s.logBytes.Store(0)
	s.logSize = 0
	last := mark
	now := uint64(time.Now().Unix())
	err = s.readLog(ctx, func(seq, streamSeq uint64, data []byte) {
		s.logStream = max(s.logStream, streamSeq)
		if seq <= mark {
			return // compacted; purged with the next compaction
		}
		last = max(last, seq)
		s.logSize += int64(len(data))
		err := readLogChunk(data, func(sk string, st logState) {
			if st.expired(now) {
				// Its keyed state, older, expired before it.
				if old, ok := s.logged[sk]; ok {
					s.logBytes.Add(-old.size(sk))
					delete(s.logged, sk)
				}
				return
			}
			s.logAdd(sk, st)
		})
		if err != nil {
			// A record we cannot read is a bug or disk damage: its
			// states start over, as an unreadable keyed state does.
			s.log.Error("discarding an unreadable part of the window state log", "seq", seq, "stream_seq", streamSeq, "err", err)
		}
	})
	if err != nil {
		return fmt.Errorf("reading the window state log: %w", err)
	}
	s.logThrough, s.logMark = last, mark
	s.nextSeq = max(s.nextSeq, last+1)
	s.lastCompact = time.Now()
	return nil
}

// readLog calls each for every message of STATELOG, in order: the
// record's seq, the message's stream sequence and its body.
func (s *store) readLog(ctx context.Context, each func(seq, streamSeq uint64, data []byte)) error {
	stream, err := s.js.Stream(ctx, bus.StreamStateLog)
	if err != nil {
		return err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return err
	}
	if info.State.Msgs == 0 {
		return nil
	}
	// One request per message: a restart reads at most state_log.size,
	// in messages of up to logChunk.
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		msg, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted
		}
		if err != nil {
			return err
		}
		n, err := strconv.ParseUint(msg.Header.Get(logSeqHeader), 10, 64)
		if err != nil {
			s.log.Error("skipping a window state log message without its seq", "stream_seq", seq)
			continue
		}
		each(n, seq, msg.Data)
	}
	return nil
}

// readUint reads an 8-byte big-endian value (0 if none).
func (s *store) readUint(key string) (uint64, error) {
	var v uint64
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(b []byte) error {
			if len(b) == 8 {
				v = binary.BigEndian.Uint64(b)
			}
			return nil
		})
	})
	return v, err
}

// merge, once a checkpoint is durable, makes its states the latest logged
// ones, and starts a compaction if one is due. Call with mu held.
func (s *Stage) merge(lr *logRecord) {
	for i, sk := range lr.keys {
		s.logAdd(sk, lr.states[i])
	}
	s.logThrough, s.logStream = lr.seq, max(s.logStream, lr.last)
	s.logSize += lr.bytes
	s.maybeCompact()
}

// maybeCompact starts a compaction when one is due and none is running.
// Call with mu held.
func (s *Stage) maybeCompact() {
	cfg := s.cfg.StateLog
	if s.compactDone != nil || s.stopped || len(s.logged) == 0 {
		return
	}
	if s.logBytes.Load() < int64(cfg.Memory) && s.logSize < int64(cfg.Size) && time.Since(s.lastCompact) < cfg.Interval {
		return
	}
	s.compacting, s.logged = s.logged, map[string]logState{}
	through, throughStream := s.logThrough, s.logStream
	s.logSize = 0
	s.lastCompact = time.Now()
	done := make(chan struct{})
	s.compactDone = done
	states := s.compacting
	s.compactions.Go(func() {
		start := time.Now()
		err := s.compact(through, throughStream, states)
		if errors.Is(err, errKilled) {
			return // dead: the next stage reads the log again
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for sk, st := range states {
			if err != nil {
				// Still in the log: keep it in memory until the next try.
				if _, newer := s.logged[sk]; !newer {
					s.logged[sk] = st
					continue
				}
			}
			s.logBytes.Add(-st.size(sk))
		}
		s.compacting, s.compactDone = nil, nil
		close(done)
		if err != nil {
			s.lastCompact = time.Time{} // try again after the next checkpoint
			s.compactionsDone.WithLabelValues("failed").Inc()
			s.log.Warn("compacting the window state log failed; will retry", "err", err)
			return
		}
		s.logMark = through
		s.compactionsDone.WithLabelValues("ok").Inc()
		s.compactSeconds.Observe(time.Since(start).Seconds())
	})
}

// compact writes states, the log through seq through (stream sequence
// throughStream), under their keys, then the mark, then purges the
// messages the mark covers. It does not hold mu: states is its own, and
// the keys it writes are no one else's.
func (s *Stage) compact(through, throughStream uint64, states map[string]logState) error {
	if err := s.step("compact"); err != nil {
		return err
	}
	sets := make([]*badger.Entry, 0, len(states))
	var dels [][]byte
	for sk, st := range states {
		if st.enc == nil {
			dels = append(dels, []byte(sk))
			continue
		}
		sets = append(sets, &badger.Entry{Key: []byte(sk), Value: st.enc, ExpiresAt: st.expires})
	}
	parts := [][]*badger.Entry{sets}
	if s.kill != nil {
		parts = [][]*badger.Entry{sets[:len(sets)/2], sets[len(sets)/2:]}
	}
	for i, part := range parts {
		if i > 0 {
			if err := s.step("compact-half"); err != nil {
				return err
			}
		}
		if err := s.writeBatch(part, nil); err != nil {
			return err
		}
	}
	if err := s.writeBatch(nil, dels); err != nil {
		return err
	}
	if err := s.step("compact-states"); err != nil {
		return err
	}
	err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set([]byte(logMarkKey), binary.BigEndian.AppendUint64(nil, through))
	})
	if err != nil {
		return fmt.Errorf("writing the state log's compaction mark: %w", err)
	}
	if err := s.step("compact-marked"); err != nil {
		return err
	}
	return s.purgeLog(throughStream)
}

// purgeLog purges STATELOG's messages through stream sequence through (a
// compaction's mark covers them, and any an earlier compaction left).
func (s *Stage) purgeLog(through uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := s.js.Stream(ctx, bus.StreamStateLog)
	if err == nil {
		err = stream.Purge(ctx, jetstream.WithPurgeSequence(through+1))
	}
	if err != nil {
		return fmt.Errorf("purging the compacted window state log: %w", err)
	}
	return nil
}

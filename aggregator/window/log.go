package window

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

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
// covered (all but their last message: purgeLog). A compaction runs beside
// the checkpoints, when the states logged since the last one take
// windows.state_log.memory, the records take windows.state_log.size, or
// windows.state_log.interval passed (which bounds what a restart reads).
//
// A record counts whole or not at all: one missing a part (a crash while
// it was appended) is not read, and its checkpoint's matches, never acked,
// are handed again and applied to the states before it. Its first part is
// appended only if the subject's last message is the one the stage knows
// (logRecord.after): a part of a failed append stored late then fails the
// next append, and the reset after it reads that record whole, rather
// than it becoming whole behind newer records. A complete record is a
// durable checkpoint: it carries the positions of the consumer messages
// its states hold (applied.go), so those handed again are not applied
// twice. A crash during a compaction leaves keyed states written without
// their mark (the records after the old mark still overlay them: the same
// states). The log is in JetStream so that, with windows partitioned
// across several instances, a partition's new owner can read its states
// from a replicated stream.
//
// Each instance writes its own subject, named by an id kept in its Badger:
// two instances on one JetStream never read or purge each other's records.
//
//	STATELOG, subject statelog.windows.<instance id>,
//	  headers Outpost-Log-Seq: the record's seq, Outpost-Log-Part: i/n,
//	    Outpost-Log-Format: 3, or 2 for a part not compressed (a record's
//	    first part's says it holds positions; none: a record of an earlier
//	    version, without them)
//	  body: part i of n of the record, which is the positions its states
//	  hold (appendApplied), then (state key, expiry, encoded state or none)...,
//	  cut at logChunk bytes wherever that falls (a state may span parts),
//	  each part of 1 KiB or more compressed on its own (S2's block
//	  format: at 100,000 keys the records take about a third of their
//	  bytes, which JetStream writes, caches and reads back)
//	m/log (Badger): the seq through which the keyed states hold the log (8 bytes BE)
//	m/applied (Badger): the positions those records held (appendApplied), written with m/log
//	m/instance (Badger): this instance's id
const (
	logSubjectPrefix = "statelog.windows."
	logSeqHeader     = "Outpost-Log-Seq"
	logPartHeader    = "Outpost-Log-Part"
	logFormatHeader  = "Outpost-Log-Format"
	logFormat        = "3"
	logFormatPlain   = "2" // the parts not compressed
	logMarkKey       = "m/log"
	appliedKey       = "m/applied"
	instanceKey      = "m/instance"
	// maxLogSeq bounds a record's seq: anything above is corruption (and
	// could wrap the next one's).
	maxLogSeq = 1 << 62
	// logChunk is the size a record's messages are cut at, well under
	// NATS's default max_payload (1 MiB).
	logChunk = 256 << 10
	// maxLogPart bounds what one part may uncompress to: parts are cut at
	// logChunk, and a damaged length must not make a restart allocate
	// gigabytes.
	maxLogPart = 16 << 20
	// minCompressed is the smallest part compressed: a smaller one gains
	// little (a quiet checkpoint's record), and is appended as it is.
	minCompressed = 1 << 10
	// compactChunk is how many states a compaction writes to Badger at a
	// time before it lets go of them (compact).
	compactChunk = 16 << 10
)

// logState is a state as the log holds it: encoded (engine.AppendState),
// or nil for a state emptied (deleted); expires is Badger's ExpiresAt for
// it (Unix seconds; 0 for none).
type logState struct {
	enc     []byte
	expires uint64
}

// size is what it costs in memory, with its key, for the byte budget.
func (l logState) size(sk string) int64 { return int64(len(sk) + len(l.enc) + logOverhead) }

// logOverhead is what a logged state costs beyond its key and encoding:
// its map slot and the rounding of its two allocations.
const logOverhead = 96

// expired reports whether Badger would no longer return it at now (Unix
// seconds).
func (l logState) expired(now uint64) bool { return l.expires != 0 && l.expires <= now }

// logRecord is one checkpoint's states, as appended to the log, and the
// positions of the messages they hold (applied, written first: begin):
// parts is the record, cut into messages of chunk bytes as it is written
// (a record of tens of thousands of states is tens of MiB: grown as one
// slice, it was copied at every doubling); last is the stream sequence of
// its last message, once acked.
type logRecord struct {
	seq   uint64
	chunk int
	// after is the stream sequence of the last message of the instance's
	// subject the stage knows of: the record's first part is appended
	// only if it is still the last (a fence against a part of a failed
	// append stored late, which would make a record the stage gave up on
	// whole ahead of this one).
	after   uint64
	applied applied
	keys    []string
	states  []logState
	chunks  [][]byte
	scratch []byte
	bytes   int64
	last    uint64
}

// begin writes the record's positions, before its states.
func (lr *logRecord) begin() { lr.write(appendApplied(nil, lr.applied)) }

func (lr *logRecord) add(sk string, st logState) {
	lr.keys = append(lr.keys, sk)
	lr.states = append(lr.states, st)
	lr.scratch = wire.AppendString(lr.scratch[:0], sk)
	lr.scratch = wire.AppendUvarint(lr.scratch, st.expires)
	lr.scratch = wire.AppendUvarint(lr.scratch, uint64(len(st.enc)))
	lr.write(lr.scratch)
	lr.write(st.enc)
}

// write appends b to the record, filling each part to chunk bytes.
func (lr *logRecord) write(b []byte) {
	for len(b) > 0 {
		if n := len(lr.chunks); n == 0 || len(lr.chunks[n-1]) == lr.chunk {
			var c []byte
			if lr.chunk <= bus.MaxBatchBytes {
				c = bus.NewBatch() // room for a chunk; free gives it back
			} else {
				c = make([]byte, 0, lr.chunk)
			}
			lr.chunks = append(lr.chunks, c)
		}
		last := &lr.chunks[len(lr.chunks)-1]
		k := min(len(b), lr.chunk-len(*last))
		*last = append(*last, b[:k]...)
		b = b[k:]
	}
}

// parts is the record's messages' bodies (none if it is empty).
func (lr *logRecord) parts() [][]byte { return lr.chunks }

// free gives the record's messages' bodies back for reuse (bus.FreeBatch):
// call it only once JetStream acked every one of them (the client keeps a
// message to send it again until then), and read parts no more.
func (lr *logRecord) free() {
	for _, c := range lr.chunks {
		bus.FreeBatch(c)
	}
	lr.chunks = nil
}

// publish appends parts from of the record's (of total) to subject and
// waits for their acks.
func (lr *logRecord) publish(ctx context.Context, js jetstream.JetStream, subject string, parts [][]byte, from, total int) error {
	futures := make([]jetstream.PubAckFuture, 0, len(parts))
	// The compressed parts, in pooled buffers (bus.NewBatch: room for a
	// chunk compressed), given back once every part is acked; after a
	// failure the client may still hold some, and the collector takes them.
	var compressed [][]byte
	seq := strconv.FormatUint(lr.seq, 10)
	for i, c := range parts {
		m := nats.NewMsg(subject)
		m.Header.Set(logSeqHeader, seq)
		m.Header.Set(logPartHeader, strconv.Itoa(from+i)+"/"+strconv.Itoa(total))
		if len(c) >= minCompressed {
			m.Header.Set(logFormatHeader, logFormat)
			var dst []byte
			if len(c) <= bus.MaxBatchBytes {
				dst = bus.NewBatch()
				compressed = append(compressed, dst)
			}
			m.Data = s2.Encode(dst, c)
		} else {
			m.Header.Set(logFormatHeader, logFormatPlain)
			m.Data = c
		}
		var opts []jetstream.PublishOpt
		if from+i == 0 {
			opts = append(opts, jetstream.WithExpectLastSequencePerSubject(lr.after))
		}
		f, err := js.PublishMsgAsync(m, opts...)
		if err != nil {
			return fmt.Errorf("%w: %w", errLogAppend, err)
		}
		futures = append(futures, f)
		lr.bytes += int64(len(m.Data))
	}
	for _, f := range futures {
		select {
		case ack := <-f.Ok():
			lr.last = max(lr.last, ack.Sequence)
		case err := <-f.Err():
			return fmt.Errorf("%w: %w", errLogAppend, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, c := range compressed {
		bus.FreeBatch(c)
	}
	return nil
}

// errLogAppend is an append to STATELOG that failed.
var errLogAppend = errors.New("appending to the window state log")

// readLogRecord reads a record: the positions its states hold (none in a
// record of an earlier format, without them), then each of its states in
// order; a record that does not read to its end yields the states before,
// and the error (none if its positions do not read: where its states
// begin is not known).
func readLogRecord(v []byte, withApplied bool, each func(sk string, st logState)) (applied, error) {
	r := wire.NewReader(v)
	var a applied
	if withApplied {
		var err error
		if a, err = readApplied(r); err != nil {
			return nil, err
		}
	}
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
	return a, r.Done()
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
// Call with no compaction running. After a failure (again), only the
// messages after the last durable record are read: what the failed
// checkpoints appended of theirs (the whole log, as at start, if the
// subject lost messages the stage did not purge).
func (s *store) loadLog(ctx context.Context, again bool) error {
	if s.instance == "" {
		if err := s.loadInstance(); err != nil {
			return err
		}
	}
	mark, err := s.readUint(logMarkKey)
	if err != nil {
		return err
	}
	// The subject's last message: below the last one the stage knows
	// (logTail, which the next append's fence expects), the subject lost
	// messages the stage did not purge (a STATELOG limit, an operator's
	// purge, STATELOG made again). The fence would fail every append and
	// a read from logStream+1 find nothing to repair it: what the stage
	// knows of the log's positions no longer holds, and the log is read
	// whole, as a restart reads it.
	if again {
		last, err := s.subjectLast(ctx)
		if err != nil {
			return fmt.Errorf("reading the window state log: %w", err)
		}
		if last < s.logTail {
			s.log.Warn("the window state log lost messages the stage did not purge; reading it whole again", "last", last, "known", s.logTail)
			again = false
		}
	}
	from := uint64(1)
	if again {
		from = s.logStream + 1
	} else {
		s.logged, s.compacting = map[string]logState{}, nil
		s.logBytes.Store(0)
		s.logSize, s.logStream, s.logTail = 0, 0, 0
	}
	if !again {
		if s.applied, err = s.loadApplied(); err != nil {
			return err
		}
	}
	last := max(mark, s.logThrough)
	now := uint64(time.Now().Unix())
	tail, err := s.readLog(ctx, from, mark, func(rec logRead) {
		seq, data := rec.seq, rec.data
		last = max(last, seq) // not to be used again, read or not
		s.logSize += int64(rec.stored)
		if !rec.complete {
			// A crash (or a failure) while it was appended: its
			// checkpoint's matches were not acked, and are applied again
			// to the states before it. The next reset reads it again
			// (logStream stays before it): a part stored late may have
			// made it whole, and the fence (logRecord.after) has then
			// failed the appends since.
			s.log.Warn("a window state log record is missing parts; its checkpoint is not read", "seq", seq)
			return
		}
		s.logStream = max(s.logStream, rec.streamSeq)
		a, err := readLogRecord(data, rec.format == logFormat || rec.format == logFormatPlain, func(sk string, st logState) {
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
			// Damaged: its states up to there count, and its positions
			// do not (its matches handed again are applied again).
			s.log.Warn("a window state log record is damaged; its states up to there are read", "seq", seq, "err", err)
			return
		}
		s.applied.union(a)
	})
	if err != nil {
		return fmt.Errorf("reading the window state log: %w", err)
	}
	s.logTail = max(s.logTail, tail)
	s.applied.only(s.streams)
	s.logThrough, s.logMark = last, mark
	s.nextSeq = max(s.nextSeq, last+1)
	s.lastCompact = time.Now()
	return nil
}

// loadInstance reads this instance's id from Badger, making one on first
// start: it names the instance's subject of STATELOG.
func (s *store) loadInstance() error {
	return s.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(instanceKey))
		switch {
		case err == nil:
			return item.Value(func(v []byte) error {
				s.instance = string(v)
				return nil
			})
		case !errors.Is(err, badger.ErrKeyNotFound):
			return err
		}
		s.instance = nuid.Next()
		return txn.Set([]byte(instanceKey), []byte(s.instance))
	})
}

// subject is this instance's subject of STATELOG.
func (s *store) subject() string { return logSubjectPrefix + s.instance }

// subjectLast is the stream sequence of the last message of this
// instance's subject of STATELOG (0: none).
func (s *store) subjectLast(ctx context.Context) (uint64, error) {
	stream, err := s.js.Stream(ctx, bus.StreamStateLog)
	if err != nil {
		return 0, err
	}
	m, err := stream.GetLastMsgForSubject(ctx, s.subject())
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, nil
	case err != nil:
		return 0, err
	}
	return m.Sequence, nil
}

// logRead is a record of the state log as read: its seq, the stream
// sequence of its last part read, its parts joined, whether every part
// was, and its format (logFormatHeader).
type logRead struct {
	seq, streamSeq uint64
	data           []byte
	stored         int // its bytes in STATELOG (compressed)
	complete       bool
	format         string
}

// readLog calls each for every record of this instance's subject of
// STATELOG after the compaction mark, from stream sequence from on, in
// order, with its parts joined. A record missing a part ends at the gap,
// incomplete; a message that is not a part of the next record in order (a
// bad header, a seq not after the one before) is skipped and logged. It
// returns the stream sequence of the last message it read (0: none).
func (s *store) readLog(ctx context.Context, from, mark uint64, each func(logRead)) (tail uint64, err error) {
	var (
		cur      uint64 // seq of the record being joined (0: none)
		next     int    // the part expected next
		total    int
		gap      bool // a part of it is missing
		format   string
		data     []byte
		stored   int // the record's bytes in STATELOG
		lastPart uint64
		prev     = mark // seq of the record before
	)
	flush := func() {
		if cur != 0 {
			each(logRead{seq: cur, streamSeq: lastPart, data: data, stored: stored, complete: !gap && next == total, format: format})
			prev = cur
		}
		cur, data, stored = 0, nil, 0
	}
	// part appends a part's body to data, uncompressed; false if it does
	// not uncompress (the record ends there, as at a missing part).
	part := func(streamSeq uint64, hdr nats.Header, body []byte) bool {
		stored += len(body)
		if hdr.Get(logFormatHeader) != logFormat {
			data = append(data, body...)
			return true
		}
		n, err := s2.DecodedLen(body)
		if err == nil && n > maxLogPart {
			err = fmt.Errorf("a part of %d bytes uncompressed", n)
		}
		if err == nil {
			data = slices.Grow(data, n)
			var plain []byte
			// Into data's room: plain is that room, and appending it
			// copies nothing (a copy if Decode had to allocate).
			if plain, err = s2.Decode(data[len(data):len(data)+n], body); err == nil {
				data = append(data, plain...)
			}
		}
		if err != nil {
			s.log.Error("a window state log message does not uncompress; its record ends before it", "stream_seq", streamSeq, "err", err)
			return false
		}
		return true
	}
	take := func(streamSeq uint64, hdr nats.Header, body []byte) {
		rseq, err1 := strconv.ParseUint(hdr.Get(logSeqHeader), 10, 64)
		i, n, err2 := parsePart(hdr.Get(logPartHeader))
		switch {
		case err1 != nil || err2 != nil || rseq == 0 || rseq >= maxLogSeq:
			s.log.Error("skipping a window state log message without a valid seq and part", "stream_seq", streamSeq)
			return
		case rseq <= mark:
			return // compacted; purged with the next compaction
		case rseq == cur:
			if !gap && i == next && n == total && part(streamSeq, hdr, body) {
				next, lastPart = i+1, streamSeq
			} else {
				gap = true // a part missing before it; the record ends at the gap
			}
			return
		case rseq < max(prev, cur):
			s.log.Error("skipping a window state log message out of order", "stream_seq", streamSeq, "seq", rseq, "after", max(prev, cur))
			return
		}
		flush()
		if i != 0 {
			// Its first parts are gone: nothing of it can be read.
			s.log.Error("skipping a window state log record whose first part is missing", "stream_seq", streamSeq, "seq", rseq)
			prev = rseq
			return
		}
		cur, next, total, lastPart, gap, format = rseq, 1, n, streamSeq, false, hdr.Get(logFormatHeader)
		if !part(streamSeq, hdr, body) {
			gap, next = true, 0
		}
	}
	tail, err = bus.ReadSubject(ctx, s.js, bus.StreamStateLog, s.subject(), from, s.log, take)
	if err != nil {
		return 0, err
	}
	flush()
	return tail, nil
}

// parsePart reads an Outpost-Log-Part header, "i/n".
func parsePart(h string) (i, n int, err error) {
	a, b, ok := strings.Cut(h, "/")
	if !ok {
		return 0, 0, errors.New("no part")
	}
	if i, err = strconv.Atoi(a); err == nil {
		n, err = strconv.Atoi(b)
	}
	if err == nil && (i < 0 || n < 1 || i >= n) {
		err = errors.New("part out of range")
	}
	return i, n, err
}

// loadApplied reads the positions the compacted records held (m/applied;
// none before the first compaction). What does not read back is dropped,
// and logged: the matches of those positions handed again are applied
// again, as before positions were kept.
func (s *store) loadApplied() (applied, error) {
	a := applied{}
	err := s.readValue(appliedKey, func(b []byte) {
		r := wire.NewReader(b)
		got, err := readApplied(r)
		if err == nil {
			err = r.Done()
		}
		if err != nil {
			s.log.Error("the window state's applied positions do not read back; dropped", "err", err)
			return
		}
		a = got
	})
	return a, err
}

// readUint reads an 8-byte big-endian value (0 if none).
func (s *store) readUint(key string) (uint64, error) {
	var v uint64
	err := s.readValue(key, func(b []byte) {
		if len(b) == 8 {
			v = binary.BigEndian.Uint64(b)
		}
	})
	return v, err
}

// readValue calls read with the value of key in Badger, if there is one;
// the bytes are valid only during the call.
func (s *store) readValue(key string, read func([]byte)) error {
	return s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(b []byte) error {
			read(b)
			return nil
		})
	})
}

// merge, once a checkpoint is durable, makes its states the latest logged
// ones, and starts a compaction if one is due. Call with mu held.
func (s *Stage) merge(lr *logRecord) {
	for i, sk := range lr.keys {
		s.logAdd(sk, lr.states[i])
	}
	s.applied.union(lr.applied)
	s.logThrough, s.logStream = lr.seq, max(s.logStream, lr.last)
	s.logTail = max(s.logTail, lr.last)
	s.logSize += lr.bytes
	s.maybeCompact(false)
}

// maybeCompact starts a compaction when one is due (or, with force, at
// once: the log refused an append, and a compaction purges it) and none is
// running, nor a failed one's retry is pending. Call with mu held.
func (s *Stage) maybeCompact(force bool) {
	cfg := s.cfg.StateLog
	if s.compactDone != nil || s.stopped || len(s.logged) == 0 || time.Now().Before(s.compactRetry) {
		return
	}
	if !force && s.logBytes.Load() < int64(cfg.Memory) && s.logSize < int64(cfg.Size) && time.Since(s.lastCompact) < cfg.Interval {
		return
	}
	s.compacting, s.logged = s.logged, map[string]logState{}
	// The keys, in the order the compaction writes them: it reads and
	// lets go of the states a chunk at a time, with mu held (the map is
	// read by lookups meanwhile).
	keys := make([]string, 0, len(s.compacting))
	for sk := range s.compacting {
		keys = append(keys, sk)
	}
	through, throughStream, held := s.logThrough, s.logStream, s.applied.clone()
	s.logSize = 0
	s.lastCompact = time.Now()
	done := make(chan struct{})
	s.compactDone = done
	states := s.compacting
	s.compactions.Go(func() {
		start := time.Now()
		err := s.compact(through, throughStream, states, keys, held)
		if errors.Is(err, errKilled) {
			return // dead: the next stage reads the log again
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		// What it has not let go of: all of them once it succeeded (the
		// last chunk), those it did not write when it failed.
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
			// Try again after a backoff (doubling, up to the interval).
			s.compactBackoff = min(max(2*s.compactBackoff, time.Second), cfg.Interval)
			s.compactRetry = time.Now().Add(s.compactBackoff)
			s.lastCompact = time.Time{}
			s.compactionsDone.WithLabelValues("failed").Inc()
			s.log.Warn("compacting the window state log failed; will retry", "err", err)
			return
		}
		s.logMark = through
		s.compactBackoff = 0
		s.compactionsDone.WithLabelValues("ok").Inc()
		s.compactSeconds.Observe(time.Since(start).Seconds())
	})
}

// compact writes states (s.compacting), the log through seq through
// (stream sequence throughStream), under their keys, then the mark with
// held, the positions those records hold, then purges the messages the
// mark covers. It writes them compactChunk at a time, in the order of
// keys, and lets go of each chunk once Badger holds it: a lookup then
// reads the state from Badger, which holds what the log does, and the
// memory of what is written is freed as it goes rather than at the end
// (at 300,000 states, the states logged again meanwhile and those being
// written were both held until the last was written). A crash or a failure
// before the mark leaves states written without it: the records after the
// old mark overlay them with the same states. It holds mu only to read
// and let go of a chunk; the keys it writes are no one else's.
func (s *Stage) compact(through, throughStream uint64, states map[string]logState, keys []string, held applied) error {
	if err := s.step("compact"); err != nil {
		return err
	}
	chunk := s.compactChunk
	if s.kill != nil {
		// A test's kill hook may stop it halfway.
		chunk = min(chunk, max(len(keys)/2, 1))
	}
	type write struct {
		sk string
		st logState
	}
	var batch []write
	for len(keys) > 0 {
		n := min(chunk, len(keys))
		batch = batch[:0]
		s.mu.Lock()
		for _, sk := range keys[:n] {
			batch = append(batch, write{sk, states[sk]})
		}
		s.mu.Unlock()
		wb := s.db.NewWriteBatch()
		for _, w := range batch {
			var err error
			if w.st.enc == nil {
				err = wb.Delete([]byte(w.sk))
			} else {
				err = wb.SetEntry(&badger.Entry{Key: []byte(w.sk), Value: w.st.enc, ExpiresAt: w.st.expires})
			}
			if err != nil {
				wb.Cancel()
				return fmt.Errorf("compacting window state: %w", err)
			}
		}
		if err := wb.Flush(); err != nil {
			return fmt.Errorf("compacting window state: %w", err)
		}
		keys = keys[n:]
		if len(keys) == 0 {
			break // the last chunk is let go of with the rest, at the end
		}
		s.mu.Lock()
		for _, w := range batch {
			delete(states, w.sk)
			s.logBytes.Add(-w.st.size(w.sk))
		}
		s.mu.Unlock()
		if err := s.step("compact-half"); err != nil {
			return err
		}
	}
	if err := s.step("compact-states"); err != nil {
		return err
	}
	err := s.db.Update(func(txn *badger.Txn) error {
		if err := txn.Set([]byte(appliedKey), appendApplied(nil, held)); err != nil {
			return err
		}
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

// purgeLog purges this instance's messages of STATELOG before stream
// sequence through (a compaction's mark covers them, and any an earlier
// compaction left). The one at through is kept, read as compacted: the
// subject's last message stays the one the next append's fence expects
// (logRecord.after), not none.
func (s *Stage) purgeLog(through uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := s.js.Stream(ctx, bus.StreamStateLog)
	if err == nil {
		err = stream.Purge(ctx, jetstream.WithPurgeSubject(s.subject()), jetstream.WithPurgeSequence(through))
	}
	if err != nil {
		return fmt.Errorf("purging the compacted window state log: %w", err)
	}
	return nil
}

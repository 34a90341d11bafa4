package window

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-siem/outpost/aggregator/bus"
)

// Findings of a second adversarial review of the state log's read
// (readLog through an ordered consumer), each reproduced by its test
// before its fix.

// stateLogConsumers names the consumers STATELOG holds.
func stateLogConsumers(ctx context.Context, t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	stream, err := js.Stream(ctx, bus.StreamStateLog)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	lister := stream.ConsumerNames(ctx)
	for name := range lister.Name() {
		names = append(names, name)
	}
	if err := lister.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// publishLogRecords appends n one-part records (seq 1..n) to subject.
func publishLogRecords(ctx context.Context, t *testing.T, js jetstream.JetStream, subject string, n int) {
	t.Helper()
	for i := range n {
		rec := &logRecord{seq: uint64(i + 1), chunk: logChunk}
		rec.add(fmt.Sprintf("w/many@fp\x00host=h%d", i), logState{enc: []byte("s")})
		if _, err := js.PublishMsgAsync(newLogMsg(subject, strconv.Itoa(i+1), rec.parts()[0])); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
}

// A restart read the log through an ordered consumer and deleted the
// consumer it was made with; but every Fetch of an ordered consumer
// replaces it by a new one, and the last was left on STATELOG (until its
// inactivity threshold, 5 minutes): one more with every restart and every
// reset after a failed checkpoint.
func TestReview2RestartLeavesAStateLogConsumer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, nil)
	js := h.s.js
	publishLogRecords(ctx, t, js, h.s.subject(), 3*64) // three of bus.ReadSubject's fetches
	for range 3 {
		h.s.mu.Lock()
		err := h.s.loadLog(ctx, false)
		h.s.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(h.s.logged) == 0 {
		t.Fatal("nothing read")
	}
	// The ordered consumer deletes the ones it replaces in the background.
	var left []string
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if left = stateLogConsumers(ctx, t, js); len(left) == 0 {
			return
		}
	}
	t.Errorf("after 3 reads of the log, STATELOG still holds %d consumers: %v", len(left), left)
}

// A read of the log whose STATELOG goes away in the middle (deleted, or
// JetStream refusing new consumers) once returned GetMsg's error; the
// ordered consumer's Fetch retries making its next consumer forever, and
// ignores ctx: loadLog hung with the stage's mu held (a shutdown too).
func TestReview2ReadLogHangsWhenTheStateLogGoes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, nil)
	js := h.s.js
	publishLogRecords(ctx, t, js, h.s.subject(), 3*64) // three of bus.ReadSubject's fetches
	done := make(chan error, 1)
	go func() {
		deleted := false
		_, err := h.s.readLog(ctx, 1, 0, func(logRead) {
			if deleted {
				return
			}
			deleted = true
			if err := js.DeleteStream(ctx, bus.StreamStateLog); err != nil {
				t.Error(err)
			}
		})
		done <- err
	}()
	select {
	case err := <-done:
		t.Logf("readLog: %v", err)
		if err == nil {
			t.Error("readLog reported no error after STATELOG went away in the middle of the read")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("readLog still running 20 s after STATELOG went away")
	}
}

// getMsgReadLog is readLog as it was before the ordered consumer: one
// GetMsg of the subject's next message at a time.
func getMsgReadLog(ctx context.Context, s *store, from, mark uint64, each func(seq, streamSeq uint64, data []byte)) error {
	stream, err := s.js.Stream(ctx, bus.StreamStateLog)
	if err != nil {
		return err
	}
	var (
		cur      uint64
		next     int
		total    int
		data     []byte
		lastPart uint64
		prev     = mark
	)
	flush := func() {
		if cur != 0 {
			each(cur, lastPart, data)
			prev = cur
		}
		cur, data = 0, nil
	}
	for seq := from; ; {
		msg, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(s.subject()))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return err
		}
		seq = msg.Sequence + 1
		rseq, err1 := strconv.ParseUint(msg.Header.Get(logSeqHeader), 10, 64)
		i, n, err2 := parsePart(msg.Header.Get(logPartHeader))
		switch {
		case err1 != nil || err2 != nil || rseq == 0 || rseq >= maxLogSeq:
			continue
		case rseq <= mark:
			continue
		case rseq == cur:
			if i == next && n == total {
				data = append(data, msg.Data...)
				next, lastPart = i+1, msg.Sequence
			}
			continue
		case rseq < max(prev, cur):
			continue
		}
		flush()
		if i != 0 {
			prev = rseq
			continue
		}
		cur, next, total, lastPart = rseq, 1, n, msg.Sequence
		data = append([]byte(nil), msg.Data...)
	}
	flush()
	return nil
}

// What the ordered consumer's read yields is what GetMsg's did, on a log
// interleaved with other instances' subjects, with parts missing, bad and
// out-of-order messages, deleted messages and a purged prefix, from any
// stream sequence and mark.
func TestReview2ReadLogAsGetMsgDid(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, nil)
	js := h.s.js
	rng := rand.New(rand.NewPCG(2, 7))
	own, other := h.s.subject(), logSubjectPrefix+"other"
	seq := uint64(0)
	for range 300 {
		subject := own
		if rng.IntN(3) == 0 {
			subject = other
		}
		if rng.IntN(4) != 0 {
			seq++
		}
		rs := strconv.FormatUint(seq, 10)
		switch rng.IntN(20) {
		case 0:
			rs = "x"
		case 1:
			rs = strconv.FormatUint(seq/2, 10) // out of order
		}
		m := newLogMsg(subject, rs, fmt.Appendf(nil, "%d.", rng.IntN(1000)))
		n := 1 + rng.IntN(3)
		m.Header.Set(logPartHeader, fmt.Sprintf("%d/%d", rng.IntN(n), n))
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := js.Stream(ctx, bus.StreamStateLog)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		_ = stream.DeleteMsg(ctx, uint64(1+rng.IntN(300)))
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject(own), jetstream.WithPurgeSequence(20)); err != nil {
		t.Fatal(err)
	}
	type rec struct {
		seq, streamSeq uint64
		data           string
	}
	read := func(f func(context.Context, uint64, uint64, func(seq, streamSeq uint64, data []byte)) error, from, mark uint64) []rec {
		var out []rec
		if err := f(ctx, from, mark, func(seq, streamSeq uint64, data []byte) {
			out = append(out, rec{seq, streamSeq, string(data)})
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	s := h.s.store
	for _, from := range []uint64{0, 1, 5, 21, 150, 299, 300, 301, 10000} {
		for _, mark := range []uint64{0, seq / 3} {
			want := read(func(ctx context.Context, from, mark uint64, each func(seq, streamSeq uint64, data []byte)) error {
				return getMsgReadLog(ctx, s, from, mark, each)
			}, from, mark)
			got := read(func(ctx context.Context, from, mark uint64, each func(seq, streamSeq uint64, data []byte)) error {
				_, err := s.readLog(ctx, from, mark, func(r logRead) { each(r.seq, r.streamSeq, r.data) })
				return err
			}, from, mark)
			if !slices.Equal(got, want) {
				t.Errorf("from %d, mark %d: read %d records, GetMsg read %d:\n got %v\nwant %v", from, mark, len(got), len(want), got, want)
			}
		}
	}
}

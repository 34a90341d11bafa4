package bus

import (
	"encoding/binary"
	"errors"
	"runtime"
	"testing"

	"github.com/klauspost/compress/s2"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// review15Ratio is the most a message's bytes may be multiplied by
// reading it: records and decompressed bytes per byte on the wire. Before
// compressed batches a message of L bytes gave at most L records (each at
// least one byte); a forged compressed batch must not give a publisher on
// events.> or matches.> millions of records (or dead letters) for a few
// bytes.
const review15Ratio = 64

var errReview15Stop = errors.New("stopped: too many")

// A forged 0xB2 batch of 13 bytes that decompresses to 1 MiB of zero
// bytes: 1,048,576 empty records, each of which fails to decode and goes
// to bad (in the filter and the windows: one synchronous DEADLETTER
// publish each). Reading must not multiply the message that much.
func TestReview15ForgedBatchDoesNotMultiplyBadRecords(t *testing.T) {
	forged := append([]byte{batchS2}, s2.Encode(nil, make([]byte, 1<<20))...)
	limit := review15Ratio * len(forged)
	var bad int
	countBad := func([]byte, error) error {
		if bad++; bad > 10*limit {
			return errReview15Stop
		}
		return nil
	}
	_ = DecodeEvents(forged, func(*event.Event) error { return nil }, countBad)
	if bad > limit {
		t.Errorf("EVENTS: a %d-byte message gave %d bad records (stopped at %d), want at most %d", len(forged), bad, 10*limit, limit)
	}
	bad = 0
	_ = DecodeMatches(forged, func(*event.Match) error { return nil }, countBad)
	if bad > limit {
		t.Errorf("MATCHES: a %d-byte message gave %d bad records (stopped at %d), want at most %d", len(forged), bad, 10*limit, limit)
	}
}

// A forged 0xB2 batch of about 40 bytes that decompresses to 200,000
// valid (empty) events: each is evaluated by the rule filter.
func TestReview15ForgedBatchDoesNotMultiplyEvents(t *testing.T) {
	rec := event.AppendEvent(nil, &event.Event{})
	var plain []byte
	for range 200_000 {
		plain = AppendRecord(plain, rec)
	}
	forged := append([]byte{batchS2}, s2.Encode(nil, plain[1:])...)
	limit := review15Ratio * len(forged)
	var n int
	_ = DecodeEvents(forged, func(*event.Event) error {
		if n++; n > 10*limit {
			return errReview15Stop
		}
		return nil
	}, func(_ []byte, err error) error { return err })
	if n > limit {
		t.Errorf("a %d-byte message gave %d events (stopped at %d), want at most %d", len(forged), n, 10*limit, limit)
	}
}

// A forged 0xB2 batch of 6 bytes claiming to decompress to 32 MiB (the
// bound) makes the stage allocate (and zero) 32 MiB before the decoder
// finds it corrupt: about 5 ms of CPU (12 for MATCHES) per 6-byte message.
func TestReview15ForgedLengthAllocatesLittle(t *testing.T) {
	forged := append([]byte{batchS2}, binary.AppendUvarint(nil, maxDecompressed)...)
	forged = append(forged, 0)
	nop := func([]byte, error) error { return nil }
	for name, decode := range map[string]func(){
		"EVENTS":  func() { _ = DecodeEvents(forged, func(*event.Event) error { return nil }, nop) },
		"MATCHES": func() { _ = DecodeMatches(forged, func(*event.Match) error { return nil }, nop) },
	} {
		decode() // the pool primed
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		const runs = 8
		for range runs {
			decode()
		}
		runtime.ReadMemStats(&after)
		if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 1<<20 {
			t.Errorf("%s: a %d-byte forged message allocates %d bytes", name, len(forged), per)
		}
	}
}

// Compress still compresses ordinary batches (sshd events: about 6x).
func TestReview15OrdinaryBatchesStillCompressed(t *testing.T) {
	var batch []byte
	for _, ev := range sshdEvents(1000) {
		batch = AppendRecord(batch, event.AppendEvent(nil, ev))
	}
	n := len(batch)
	out := Compress(batch)
	if out[0] != batchS2 || len(out)*3 > n {
		t.Fatalf("a batch of %d bytes came out as %d (first byte %#x)", n, len(out), out[0])
	}
}

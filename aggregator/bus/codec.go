package bus

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/compress/s2"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/internal/wire"
)

// EVENTS and MATCHES messages carry batches of records: one JetStream
// message and one ack per batch instead of per event is what lets ingest
// keep up with a syslog relay; the rule filter acks a message only after
// every event in it was evaluated and its matches acked. A batch never
// exceeds MaxBatchBytes (NATS's default max payload is 1 MiB).
//
// A batch is binary: the byte batchBinary, then each record as a uvarint
// length and the record (event.AppendEvent / event.AppendMatch). A batch
// starting with batchS2 is a binary batch compressed (Compress); one
// starting with any other byte is JSON lines, one JSON object per line, as
// versions before the binary encoding wrote them: still read, so a stream
// left by an upgrade drains.
const MaxBatchBytes = 256 << 10

const (
	batchBinary = 0xB1
	// batchS2 starts a compressed batch: the rest is a binary batch's
	// records (without its first byte), compressed with S2's block format.
	batchS2 = 0xB2
	// minCompressed is the smallest batch Compress compresses: a batch of
	// a few records gains little.
	minCompressed = 1 << 10
	// maxDecompressed bounds what a compressed batch may decompress to: a
	// damaged or forged length must not make a stage allocate gigabytes.
	// Compress leaves a larger batch (records of up to the sources' 16 MiB
	// max_record_size) as it is.
	maxDecompressed = 32 << 20
	// maxRatio bounds what a compressed batch may decompress to by its
	// own size: S2 turns a few bytes into megabytes of a repeated record,
	// so without it a forged message of a few bytes on events.> or
	// matches.> made a stage allocate 32 MiB, or read a million records
	// (each one dead letter, if they do not decode). Batches of events and
	// matches shrink about 6 times; Compress leaves one that would shrink
	// more than this as it is.
	maxRatio = 64
)

// HeaderWatermark, on a MATCHES message, is the newest event time (unix
// nanoseconds, decimal) the rule filter had admitted before the batch of
// events the message's matches come from — or, on the batch's last
// message, after it: how far the windows may move their watermark
// (engine.Watermark) once they applied the message. A message without it
// (written by an older version) moves the watermark by its matches' times.
const HeaderWatermark = "Outpost-Watermark"

// AppendRecord appends one encoded record to a batch payload (nil starts
// a new batch).
func AppendRecord(batch, rec []byte) []byte {
	if len(batch) == 0 {
		batch = append(batch, batchBinary)
	}
	batch = binary.AppendUvarint(batch, uint64(len(rec)))
	return append(batch, rec...)
}

// batchBuffers recycles batch payloads. Built by appending to nothing, a
// batch of MaxBatchBytes allocated about twice its size and copied what it
// held at every doubling: a third of all the bytes the pipeline allocated.
var batchBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, batchCap)
	return &b
}}

// batchCap is the capacity of a pooled batch: a full batch and one
// varint, or that batch compressed (S2's bound on its output is a little
// larger than its input).
var batchCap = 1 + s2.MaxEncodedLen(MaxBatchBytes+binary.MaxVarintLen64)

// Compress returns a binary batch compressed with S2, and gives batch back
// (FreeBatch); or batch itself when it is small, too large, or does not
// shrink (or shrinks more than maxRatio times: records reads no such
// batch). EVENTS and MATCHES batches take about a quarter of their bytes
// compressed: JetStream writes, caches (its 8 MiB block buffers, for the
// blocks written in the last seconds) and reads back that much less.
// Like a batch of NewBatch, the result is freed with FreeBatch.
func Compress(batch []byte) []byte {
	if len(batch) < minCompressed || len(batch) > maxDecompressed || batch[0] != batchBinary {
		return batch
	}
	n := 1 + s2.MaxEncodedLen(len(batch)-1)
	var out []byte
	if n <= batchCap {
		out = NewBatch()[:n]
	} else {
		out = make([]byte, n)
	}
	enc := s2.Encode(out[1:], batch[1:])
	if 1+len(enc) >= len(batch) || len(batch)-1 > maxRatio*len(enc) {
		FreeBatch(out)
		return batch
	}
	out[0] = batchS2
	FreeBatch(batch)
	return out[:1+len(enc)]
}

// NewBatch returns an empty batch payload with room for MaxBatchBytes, for
// AppendRecord; FreeBatch gives it back once it is no longer read.
func NewBatch() []byte {
	return (*batchBuffers.Get().(*[]byte))[:0]
}

// FreeBatch gives a batch from NewBatch back for reuse. Call it only when
// nothing reads the bytes any more: for a published message, once
// JetStream acked it (the client keeps the message to send it again until
// then). A batch that grew past its capacity (one record over
// MaxBatchBytes) is left to the collector.
func FreeBatch(b []byte) {
	if cap(b) != batchCap {
		return
	}
	b = b[:0]
	batchBuffers.Put(&b)
}

// Fits reports whether a record of n bytes can be appended to batch
// without going over MaxBatchBytes. An empty batch takes any record.
func Fits(batch []byte, n int) bool {
	return len(batch) == 0 || len(batch)+binary.MaxVarintLen64+n <= MaxBatchBytes
}

// errTruncated: a binary batch whose last record is cut short.
var errTruncated = errors.New("batch truncated")

// plainBuffers recycles what EVENTS batches decompress into (DecodeEvents:
// its events' strings are copies, nothing keeps the record's bytes).
var plainBuffers = sync.Pool{New: func() any { return new([]byte) }}

// records calls fn for each record of a batch and whether it is JSON. The
// unreadable rest of a damaged binary batch goes to bad, once. With reuse
// a compressed batch is decompressed into a pooled buffer, reused once
// records returns: for a caller whose fn and bad keep nothing of rec.
func records(data []byte, reuse bool, fn func(rec []byte, isJSON bool) error, bad func(rec []byte, err error) error) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case batchBinary:
		data = data[1:]
	case batchS2:
		// Without reuse, decompressed into memory of its own, as the
		// message's data is: a decoded match keeps its record's bytes (its
		// fields, decoded on demand).
		n, err := s2.DecodedLen(data[1:])
		if err == nil && n == 0 {
			err = errors.New("decompresses to nothing") // Compress writes no such batch
		}
		if err == nil && n > maxDecompressed {
			err = fmt.Errorf("decompresses to %d bytes, over %d", n, maxDecompressed)
		}
		if err == nil && n > maxRatio*(len(data)-1) {
			err = fmt.Errorf("decompresses to %d bytes, over %d times its %d", n, maxRatio, len(data)-1)
		}
		if err == nil {
			var dst []byte
			if reuse {
				buf := plainBuffers.Get().(*[]byte)
				defer func() {
					if cap(*buf) <= 2*batchCap {
						plainBuffers.Put(buf)
					}
				}()
				if cap(*buf) < n {
					*buf = make([]byte, n)
				}
				dst = (*buf)[:n]
			} else {
				dst = make([]byte, n)
			}
			var plain []byte
			if plain, err = s2.Decode(dst, data[1:]); err == nil {
				data = plain
			}
		}
		if err != nil {
			// The whole message, as it came, for the dead letter.
			return bad(data, fmt.Errorf("decompressing batch: %w", err))
		}
	default:
		return splitLines(data, func(line []byte) error { return fn(line, true) })
	}
	for len(data) > 0 {
		n, k := binary.Uvarint(data)
		if k <= 0 || n > uint64(len(data)-k) {
			return bad(data, errTruncated)
		}
		rec := data[k : k+int(n)]
		data = data[k+int(n):]
		if err := fn(rec, false); err != nil {
			return err
		}
	}
	return nil
}

// splitLines calls fn for each non-empty line of a JSON-lines batch.
func splitLines(data []byte, fn func(line []byte) error) error {
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if len(line) == 0 {
			continue
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	return nil
}

// DecodeEvents calls fn for each event of an EVENTS message. A record that
// does not decode is passed to bad with its error, and decoding goes on
// with the next; fn's error stops decoding and is returned. The event
// handed to fn is reused for the next record, its Attrs map included: fn
// must not keep either. Its strings are its own; the rec handed to bad is
// reused once DecodeEvents returns (a compressed batch's buffer): bad
// copies what it keeps.
func DecodeEvents(data []byte, fn func(*event.Event) error, bad func(rec []byte, err error) error) error {
	var r wire.Reader
	var ev event.Event
	return records(data, true, func(rec []byte, isJSON bool) error {
		var err error
		if isJSON {
			ev = event.Event{}
			err = json.Unmarshal(rec, &ev)
		} else {
			err = event.DecodeEventReusing(rec, &ev, &r)
		}
		if err != nil {
			return bad(rec, fmt.Errorf("decoding event: %w", err))
		}
		return fn(&ev)
	}, bad)
}

// DecodeMatches calls fn for each match of a MATCHES message, as
// DecodeEvents does for events. A match's Fields are decoded by its
// CarriedFields, on demand.
func DecodeMatches(data []byte, fn func(*event.Match) error, bad func(rec []byte, err error) error) error {
	var r wire.Reader
	var m event.Match
	return records(data, false, func(rec []byte, isJSON bool) error {
		var err error
		if isJSON {
			m = event.Match{}
			err = json.Unmarshal(rec, &m)
		} else {
			err = event.DecodeMatchLazy(rec, &m, &r)
		}
		if err != nil {
			return bad(rec, fmt.Errorf("decoding match: %w", err))
		}
		return fn(&m)
	}, bad)
}

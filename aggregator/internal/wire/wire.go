// Package wire holds the primitives of Outpost's binary record encodings
// (events and matches on the bus, window state in Badger): varints,
// length-prefixed strings and times, appended to a byte slice and read back
// by a Reader that remembers its first error.
//
// The formats built on it are Outpost's own and internal; they exist
// because JSON on every hop was the largest cost of the pipeline
// (docs/benchmarks.md). Every format starts with a version byte so a
// future change can still read what an older version left in a stream or
// on disk.
package wire

import (
	"encoding/binary"
	"errors"
	"time"
)

// ErrShort is returned for a record that ends in the middle of a field.
var ErrShort = errors.New("wire: record truncated")

// ErrCorrupt is returned for a length or count that cannot be right.
var ErrCorrupt = errors.New("wire: record corrupt")

// AppendUvarint, AppendVarint and AppendString append one field.
func AppendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

// AppendVarint appends a signed integer (zig-zag varint).
func AppendVarint(b []byte, v int64) []byte { return binary.AppendVarint(b, v) }

// AppendString appends len(s) as a uvarint and the bytes of s.
func AppendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// AppendTime appends t as seconds and nanoseconds since the Unix epoch and
// its zone offset in seconds, which is what RFC 3339 text keeps of it: any
// year round-trips, and a zero time reads back as the zero time.
func AppendTime(b []byte, t time.Time) []byte {
	_, off := t.Zone()
	b = binary.AppendVarint(b, t.Unix())
	b = binary.AppendUvarint(b, uint64(t.Nanosecond()))
	return binary.AppendVarint(b, int64(off))
}

// Reader reads fields in the order they were appended. After the first
// error every read returns a zero value; Err reports it.
type Reader struct {
	b []byte
	// s, when set, holds the same bytes as the record: strings are then
	// cut from it without a copy each (one allocation per record).
	s   string
	off int
	err error
	// zone caches the last fixed zone made, so a stream of events from one
	// offset does not allocate a zone per time.
	zone    *time.Location
	zoneOff int
}

// NewReader reads b; each string read is a fresh copy.
func NewReader(b []byte) *Reader { return &Reader{b: b} }

// Reset reads b. With shared, strings read are substrings of one copy of b
// made here: cheaper for a record decoded whole and dropped together, but
// a string kept keeps the whole record alive.
func (r *Reader) Reset(b []byte, shared bool) {
	r.b, r.off, r.err, r.s = b, 0, nil, ""
	if shared {
		r.s = string(b)
	}
}

// Err returns the first error met, or ErrCorrupt if bytes are left over
// when the caller expected the end.
func (r *Reader) Err() error { return r.err }

// Done returns the first error met, or ErrCorrupt if unread bytes remain.
func (r *Reader) Done() error {
	if r.err == nil && r.off != len(r.b) {
		return ErrCorrupt
	}
	return r.err
}

// Fail records err (the first error wins) and stops reading: for a
// caller that finds the record corrupt.
func (r *Reader) Fail(err error) { r.fail(err) }

func (r *Reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.off = len(r.b)
}

// Byte reads one byte.
func (r *Reader) Byte() byte {
	if r.off >= len(r.b) {
		r.fail(ErrShort)
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

// Uvarint reads an unsigned varint.
func (r *Reader) Uvarint() uint64 {
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		r.fail(ErrShort)
		return 0
	}
	r.off += n
	return v
}

// Varint reads a signed varint.
func (r *Reader) Varint() int64 {
	v, n := binary.Varint(r.b[r.off:])
	if n <= 0 {
		r.fail(ErrShort)
		return 0
	}
	r.off += n
	return v
}

// Int reads a signed varint as an int.
func (r *Reader) Int() int { return int(r.Varint()) }

// Count reads a uvarint count of items each at least min bytes long, and
// fails if the rest of the record cannot hold that many: a corrupt count
// must not make the caller allocate gigabytes.
func (r *Reader) Count(min int) int {
	n := r.Uvarint()
	if r.err != nil {
		return 0
	}
	if n > uint64(len(r.b)-r.off)/uint64(max(min, 1)) {
		r.fail(ErrCorrupt)
		return 0
	}
	return int(n)
}

// String reads a length-prefixed string.
func (r *Reader) String() string {
	n := r.Uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)-r.off) {
		r.fail(ErrShort)
		return ""
	}
	start, end := r.off, r.off+int(n)
	r.off = end
	if n == 0 {
		return ""
	}
	if r.s != "" {
		return r.s[start:end]
	}
	return string(r.b[start:end])
}

// Bytes reads a length-prefixed string as a fresh byte slice.
func (r *Reader) Bytes() []byte {
	if v := r.View(); v != nil {
		return append([]byte(nil), v...)
	}
	return nil
}

// View reads a length-prefixed string as a slice of the record itself (no
// copy: valid while the record is).
func (r *Reader) View() []byte {
	n := r.Uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)-r.off) {
		r.fail(ErrShort)
		return nil
	}
	start := r.off
	r.off += int(n)
	return r.b[start:r.off]
}

// Skip skips a length-prefixed string.
func (r *Reader) Skip() {
	n := r.Uvarint()
	if r.err != nil {
		return
	}
	if n > uint64(len(r.b)-r.off) {
		r.fail(ErrShort)
		return
	}
	r.off += int(n)
}

// Advance skips n bytes its caller read from Rest itself; more than are
// left is an error.
func (r *Reader) Advance(n int) {
	if r.err != nil {
		return
	}
	if n < 0 || n > len(r.b)-r.off {
		r.fail(ErrShort)
		return
	}
	r.off += n
}

// Rest returns the unread bytes (not a copy), or nil if none are left.
func (r *Reader) Rest() []byte {
	if r.off >= len(r.b) {
		return nil
	}
	return r.b[r.off:]
}

// Time reads a time written by AppendTime: UTC when its offset was 0,
// otherwise a fixed zone with that offset (as RFC 3339 parsing gives).
func (r *Reader) Time() time.Time {
	sec := r.Varint()
	nsec := r.Uvarint()
	off := r.Varint()
	if r.err != nil {
		return time.Time{}
	}
	if nsec >= 1e9 || off <= -24*3600 || off >= 24*3600 {
		r.fail(ErrCorrupt)
		return time.Time{}
	}
	t := time.Unix(sec, int64(nsec))
	if off == 0 {
		return t.UTC()
	}
	if r.zone == nil || r.zoneOff != int(off) {
		r.zone, r.zoneOff = time.FixedZone("", int(off)), int(off)
	}
	return t.In(r.zone)
}

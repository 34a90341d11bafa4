package engine

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"math/bits"
	"slices"
	"sync"
	"unsafe"

	"github.com/outpost-siem/outpost/aggregator/internal/wire"
	"github.com/outpost-siem/outpost/rules"
)

// The first byte of a State's binary encoding: its version. stateV2
// added SinceFields at the end; a stateV1 value is the same without them.
// stateV3 writes times in the largest power-of-ten unit that divides
// their deltas (a second for most syslog) and string lists front-coded
// (each string as the length of the prefix it shares with the one before
// and the rest: event ids of one process share most of theirs), which
// makes a state about three times smaller. A value starting with '{' is
// the JSON that versions before the binary encoding wrote. All are read.
const (
	stateV1 = 1
	stateV2 = 2
	stateV3 = 3
)

// AppendState appends st's binary encoding (stateV3), fields in
// declaration order.
func AppendState(b []byte, st *State) []byte {
	if b == nil {
		// Room for the whole state: one allocation.
		n := 64 + 10*len(st.Times) + 2*len(st.Steps) + len(st.SinceID)
		for _, l := range [][]string{st.IDs, st.Values, st.SpentIDs, st.Seen} {
			for _, s := range l {
				n += len(s) + 2
			}
		}
		for k, v := range st.SinceFields {
			n += len(k) + len(v) + 4
		}
		b = make([]byte, 0, n)
	}
	b = append(b, stateV3)
	b = appendTimes(b, st.Times)
	b = appendFront(b, st.IDs)
	b = wire.AppendUvarint(b, uint64(len(st.Steps)))
	for _, s := range st.Steps {
		b = wire.AppendVarint(b, int64(s))
	}
	b = appendFront(b, st.Values)
	b = wire.AppendVarint(b, st.LastAlert)
	b = wire.AppendVarint(b, st.Spent)
	b = appendFront(b, st.SpentIDs)
	b = wire.AppendVarint(b, st.First)
	b = appendFront(b, st.Seen)
	b = wire.AppendVarint(b, st.Deadline)
	b = wire.AppendVarint(b, st.Since)
	b = wire.AppendString(b, st.SinceID)
	// Sorted keys: the same state always encodes to the same bytes.
	if len(st.SinceFields) == 0 {
		return append(b, 0)
	}
	keys := slices.Sorted(maps.Keys(st.SinceFields))
	b = wire.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = wire.AppendString(b, k)
		b = wire.AppendString(b, st.SinceFields[k])
	}
	return b
}

// EncodeState returns st's encoding (AppendState) in a slice of exactly
// its length: for an encoding that is kept (the state log's index, a
// checkpoint, cold). AppendState's one allocation is sized for the
// state's strings whole, and front-coded event ids take a fraction of
// that: an 80-event state's 538 bytes sat in 2,944 (the fifth of it that
// was used is what the budgets counted).
func EncodeState(st *State) []byte {
	bp := encodeScratch.Get().(*[]byte)
	b := AppendState((*bp)[:0], st)
	out := make([]byte, len(b))
	copy(out, b)
	if cap(b) <= maxEncodeScratch {
		*bp = b
		encodeScratch.Put(bp)
	}
	return out
}

// encodeScratch holds EncodeState's buffers; one that grew past
// maxEncodeScratch (a huge state) is let go of.
var encodeScratch = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

const maxEncodeScratch = 1 << 20

// DecodeState reads AppendState's encoding, or that of older versions.
func DecodeState(v []byte, st *State) error {
	*st = State{}
	if len(v) > 0 && v[0] == '{' {
		if err := json.Unmarshal(v, st); err != nil {
			return err
		}
		return st.parallel()
	}
	// The strings (event ids, values) share one copy of v, or for
	// stateV3 one buffer per list (the few strings outside a list are
	// copied each: v is not copied whole): a few allocations instead of
	// one per event.
	var r wire.Reader
	r.Reset(v, len(v) > 0 && v[0] != stateV3)
	ver := r.Byte()
	if (ver < stateV1 || ver > stateV3) && r.Err() == nil {
		return fmt.Errorf("window state encoding version %d unknown", ver)
	}
	strs := readStrings
	if ver == stateV3 {
		// A front-coded list can decode to more than its bytes; bound it
		// so a damaged value cannot make us allocate without end.
		budget := 32*len(v) + 1024
		strs = func(r *wire.Reader) []string { return readFront(r, &budget) }
		st.Times = readTimes(&r)
	} else if n := r.Count(1); n > 0 {
		st.Times = make([]int64, n)
		prev := int64(0)
		for i := range n {
			prev += r.Varint()
			st.Times[i] = prev
		}
	}
	st.IDs = strs(&r)
	if n := r.Count(1); n > 0 {
		st.Steps = make([]uint8, n, n+1)
		for i := range n {
			k := r.Int()
			if k < 0 || k >= rules.MaxSteps {
				r.Fail(wire.ErrCorrupt)
				break
			}
			st.Steps[i] = uint8(k)
		}
	}
	st.Values = strs(&r)
	st.LastAlert = r.Varint()
	st.Spent = r.Varint()
	st.SpentIDs = strs(&r)
	st.First = r.Varint()
	st.Seen = strs(&r)
	st.Deadline = r.Varint()
	st.Since = r.Varint()
	st.SinceID = r.String()
	if ver >= stateV2 {
		if n := r.Count(2); n > 0 {
			st.SinceFields = make(map[string]string, n)
			for range n {
				k := r.String()
				st.SinceFields[k] = r.String()
			}
		}
	}
	if err := r.Done(); err != nil {
		return err
	}
	return st.parallel()
}

// parallel checks that the event lists are as long as Times (Steps and
// Values may be empty: without the rule, a threshold's state and a
// sequence's that lost its steps look alike). A state refused here is
// logged by the windows as unreadable and its key starts over; Apply's
// fits, which knows the rule's kind, catches the rest.
func (st *State) parallel() error {
	n := len(st.Times)
	if len(st.IDs) != n || len(st.Steps) != 0 && len(st.Steps) != n || len(st.Values) != 0 && len(st.Values) != n {
		return fmt.Errorf("window state damaged: %d times, %d ids, %d steps, %d values", n, len(st.IDs), len(st.Steps), len(st.Values))
	}
	return nil
}

// appendTimes writes times as deltas from the one before (the first from
// 0, wrapping as int64 arithmetic does) in a unit of 10^e nanoseconds, the
// largest (up to a second) that divides every delta: count, e, deltas.
func appendTimes(b []byte, times []int64) []byte {
	b = wire.AppendUvarint(b, uint64(len(times)))
	if len(times) == 0 {
		return b
	}
	// Whole seconds (most syslog) first, dividing by a constant: a
	// multiplication, where the other units take a division each.
	if inUnit(times, 1_000_000_000) {
		b = append(b, 9)
		prev := int64(0)
		for _, t := range times {
			b = wire.AppendVarint(b, (t-prev)/1_000_000_000)
			prev = t
		}
		return b
	}
	e, unit := 8, int64(100_000_000)
	for e > 0 && !inUnit(times, unit) {
		e, unit = e-1, unit/10
	}
	b = append(b, byte(e))
	prev := int64(0)
	for _, t := range times {
		b = wire.AppendVarint(b, (t-prev)/unit)
		prev = t
	}
	return b
}

// inUnit reports whether unit divides every delta of times (the first
// from 0).
func inUnit(times []int64, unit int64) bool {
	prev := int64(0)
	for _, t := range times {
		if (t-prev)%unit != 0 {
			return false
		}
		prev = t
	}
	return true
}

func readTimes(r *wire.Reader) []int64 {
	n := r.Count(2) // each at least its delta, after the unit
	if n == 0 {
		return nil
	}
	e := r.Byte()
	if e > 9 {
		r.Fail(wire.ErrCorrupt)
		return nil
	}
	unit := int64(1)
	for range e {
		unit *= 10
	}
	times := make([]int64, n, n+1) // room for the match that read it back
	prev := int64(0)
	for i := range n {
		prev += r.Varint() * unit
		times[i] = prev
	}
	return times
}

// appendFront writes ss front-coded: count, then for each string the
// length of the prefix it shares with the one before and the rest.
func appendFront(b []byte, ss []string) []byte {
	b = wire.AppendUvarint(b, uint64(len(ss)))
	prev := ""
	for _, s := range ss {
		p := sharedPrefix(prev, s)
		b = wire.AppendUvarint(b, uint64(p))
		b = wire.AppendString(b, s[p:])
		prev = s
	}
	return b
}

// sharedPrefix is the length of the prefix a and b share, compared eight
// bytes at a time: event ids of one process share most of theirs.
func sharedPrefix(a, b string) int {
	n := min(len(a), len(b))
	i := 0
	for ; i+8 <= n; i += 8 {
		if x := le64(a, i) ^ le64(b, i); x != 0 {
			return i + bits.TrailingZeros64(x)/8
		}
	}
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}

// le64 reads s[i:i+8] as a little-endian word (one load).
func le64(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// readFront reads appendFront's encoding into strings that share one
// buffer; budget bounds the bytes they may take in all (a corrupt prefix
// length or an exhausted budget is an error). None reads as nil.
func readFront(r *wire.Reader, budget *int) []string {
	n := r.Count(2)
	if n == 0 {
		return nil
	}
	if n == 1 { // common (a spent id): no prefix, the string shares the record
		if p := r.Uvarint(); p != 0 && r.Err() == nil {
			r.Fail(wire.ErrCorrupt)
		}
		return []string{r.String()}
	}
	// The strings are written one after the other into one buffer, which
	// becomes one string; a prefix is copied from the string before. The
	// two varints of each are read here, not through r: one byte each for
	// any id under 128 bytes, so the common case is two loads.
	in := r.Rest()
	buf := make([]byte, 0, min(24*n, *budget))
	var small [64]int
	ends := small[:0]
	if n > len(small) {
		ends = make([]int, 0, n)
	}
	ends = ends[:n]
	off, start := 0, 0
	for i := range n {
		var p, l uint64
		if off+1 < len(in) && in[off] < 0x80 && in[off+1] < 0x80 {
			p, l = uint64(in[off]), uint64(in[off+1])
			off += 2
		} else {
			var k int
			if p, k = binary.Uvarint(in[off:]); k <= 0 {
				r.Fail(wire.ErrShort)
				return nil
			}
			off += k
			if l, k = binary.Uvarint(in[off:]); k <= 0 {
				r.Fail(wire.ErrShort)
				return nil
			}
			off += k
		}
		if l > uint64(len(in)-off) {
			r.Fail(wire.ErrShort)
			return nil
		}
		prevLen := 0
		if i > 0 {
			prevLen = ends[i-1] - start
		}
		if p > uint64(prevLen) || int(p)+int(l) > *budget {
			r.Fail(wire.ErrCorrupt)
			return nil
		}
		*budget -= int(p) + int(l)
		begin := len(buf)
		buf = append(buf, buf[start:start+int(p)]...)
		buf = append(buf, in[off:off+int(l)]...)
		off += int(l)
		start = begin
		ends[i] = len(buf)
	}
	r.Advance(off)
	// buf is not written again: the string may share its bytes, as
	// strings.Builder's does.
	all := unsafe.String(unsafe.SliceData(buf), len(buf))
	out := make([]string, n, n+1)
	from := 0
	for i, end := range ends {
		out[i] = all[from:end]
		from = end
	}
	return out
}

func appendStrings(b []byte, ss []string) []byte {
	b = wire.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = wire.AppendString(b, s)
	}
	return b
}

// readStrings reads appendStrings' encoding; none reads as nil.
func readStrings(r *wire.Reader) []string {
	n := r.Count(1)
	if n == 0 {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = r.String()
	}
	return ss
}

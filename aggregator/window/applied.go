package window

import (
	"errors"
	"maps"
	"slices"
	"strings"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/internal/wire"
)

// Which consumer messages the states hold. JetStream hands a message again
// when it was not acked: after a crash between a checkpoint's state log
// append and its acks, the states already hold its matches. Applying a
// match twice is not always a no-op (an at_most window's dropped match, a
// distinct rule's absorbed repeat, an absence match past its deadline leave
// no trace in the state), so the stage recognises the message itself: each
// state log record carries the positions (stream sequences) of the
// messages its epoch applied, the compaction's mark carries those of the
// records it covers, and a message at a position they hold is skipped.
//
// They are a set, not a high-water mark: after a restart JetStream hands a
// killed consumer's unacked messages only once their ack wait passed,
// after newer ones, and those were never applied. A position is of one
// stream: one deleted and made again numbers its messages from 1 again, so
// the set is kept with the stream's creation time and dropped when that
// changes.

// span is the positions lo through hi.
type span struct{ lo, hi uint64 }

// positions is a set of stream sequences as sorted, disjoint, non-adjacent
// spans. A consumer's messages come in order, so it is a span or a few.
type positions []span

// maxSpans bounds a stream's positions. Holes are messages never applied
// here (gone from the stream by its limits, or handed again late), or
// where an account of EVENTS positions started afresh; past the bound the
// lowest (oldest) spans are forgotten.
const maxSpans = 4096

// has reports whether seq is in p.
func (p positions) has(seq uint64) bool {
	i, _ := slices.BinarySearchFunc(p, seq, func(s span, seq uint64) int {
		switch {
		case s.hi < seq:
			return -1
		case s.lo > seq:
			return 1
		}
		return 0
	})
	return i < len(p) && p[i].lo <= seq && seq <= p[i].hi
}

// overlaps reports whether p holds a position from lo through hi.
func (p positions) overlaps(lo, hi uint64) bool {
	i, _ := slices.BinarySearchFunc(p, lo, func(s span, lo uint64) int {
		if s.hi < lo {
			return -1
		}
		return 1
	})
	return i < len(p) && p[i].lo <= hi
}

// add puts seq in p.
func (p *positions) add(seq uint64) {
	n := len(*p)
	if n == 0 {
		*p = append(*p, span{seq, seq})
		return
	}
	last := &(*p)[n-1]
	switch {
	case seq > last.hi && seq-last.hi == 1:
		last.hi = seq
	case seq > last.hi:
		*p = append(*p, span{seq, seq})
	default:
		p.addSpan(span{seq, seq})
	}
}

// addSpan puts every position of sp in p.
func (p *positions) addSpan(sp span) {
	s := *p
	// The first span that reaches sp (ends at or after sp.lo-1) and the
	// first after it (starts past sp.hi+1): those between merge with sp.
	i, _ := slices.BinarySearchFunc(s, sp.lo, func(x span, lo uint64) int {
		if lo > 0 && x.hi < lo-1 {
			return -1
		}
		return 1
	})
	j := i
	for j < len(s) && (sp.hi == ^uint64(0) || s[j].lo <= sp.hi+1) {
		sp.lo, sp.hi = min(sp.lo, s[j].lo), max(sp.hi, s[j].hi)
		j++
	}
	*p = slices.Replace(s, i, j, sp)
}

// union puts every position of q in p.
func (p *positions) union(q positions) {
	for _, sp := range q {
		if n := len(*p); n == 0 || (sp.lo > (*p)[n-1].hi && sp.lo-(*p)[n-1].hi > 1) {
			*p = append(*p, sp) // the common case: q is after p
			continue
		}
		p.addSpan(sp)
	}
}

// bound forgets p's lowest spans until it has at most n: a message at a
// position forgotten is applied if it comes again (as before positions
// were kept: its matches recognised by event id), where filling the holes
// instead would skip a message never applied, and lose it.
func (p *positions) bound(n int) {
	if k := len(*p) - n; k > 0 {
		*p = slices.Delete(*p, 0, k)
	}
}

// applied is, by stream name, the positions of its messages whose matches
// the states hold, with the stream's creation time (Unix ns).
type applied map[string]*streamPositions

type streamPositions struct {
	created int64
	pos     positions
}

// holds reports whether the message at seq of stream is in a.
func (a applied) holds(stream string, seq uint64) bool {
	sp := a[stream]
	return sp != nil && sp.pos.has(seq)
}

// add puts the positions from through at of stream (made at created) in
// a. A stream made again (another creation time) starts afresh.
func (a applied) add(stream string, created int64, from, at uint64) {
	sp := a.of(stream, created)
	if from == at {
		sp.pos.add(at)
		return
	}
	sp.pos.addSpan(span{from, at})
}

// position is where a message is: at in stream, accounting for from
// through at (from == at: only itself).
type position struct {
	stream   string
	from, at uint64
}

// sourceStream is the name positions in EVENTS are kept under for the
// MATCHES messages of subject (a partition): the same EVENTS message gives
// each partition messages of its own.
func sourceStream(subject string) string { return bus.StreamEvents + "/" + subject }

// fusedSource is the name positions in EVENTS are kept under when the rule
// filter hands the stage its matches in process (windows.fused): one
// account for every partition.
var fusedSource = sourceStream("fused")

// streamOf is the stream whose creation time positions kept under name
// (a stream's name, or sourceStream's) are tied to.
func streamOf(name string) string {
	base, _, _ := strings.Cut(name, "/")
	return base
}

// of is stream's positions in a, made (or made again) for created.
func (a applied) of(stream string, created int64) *streamPositions {
	sp := a[stream]
	if sp == nil || sp.created != created {
		sp = &streamPositions{created: created}
		a[stream] = sp
	}
	return sp
}

// union puts every position of b in a, bounded; positions of a stream
// made at another time than a's replace a's if they are newer.
func (a applied) union(b applied) {
	for name, bp := range b {
		ap := a[name]
		switch {
		case ap == nil || bp.created > ap.created:
			a[name] = &streamPositions{created: bp.created, pos: slices.Clone(bp.pos)}
		case bp.created == ap.created:
			ap.pos.union(bp.pos)
			ap.pos.bound(maxSpans)
		}
	}
}

// only drops the positions of streams not made at the times current says
// (by name): a stream made again, or gone.
func (a applied) only(current map[string]int64) {
	for name, sp := range a {
		if c, ok := current[streamOf(name)]; !ok || c != sp.created {
			delete(a, name)
		}
	}
}

// clone is a copy of a.
func (a applied) clone() applied {
	c := make(applied, len(a))
	c.union(a)
	return c
}

// appendApplied encodes a: the number of streams, then for each its name,
// creation time and spans (each from the end of the one before).
func appendApplied(b []byte, a applied) []byte {
	b = wire.AppendUvarint(b, uint64(len(a)))
	for _, name := range slices.Sorted(maps.Keys(a)) {
		sp := a[name]
		b = wire.AppendString(b, name)
		b = wire.AppendUvarint(b, uint64(sp.created))
		b = wire.AppendUvarint(b, uint64(len(sp.pos)))
		var prev uint64
		for _, s := range sp.pos {
			b = wire.AppendUvarint(b, s.lo-prev)
			b = wire.AppendUvarint(b, s.hi-s.lo)
			prev = s.hi
		}
	}
	return b
}

// maxStreams bounds the streams of an encoding: MATCHES, and EVENTS per
// partition (at most 1,024).
const maxStreams = 2048

// errApplied is an encoding of applied that does not read back.
var errApplied = errors.New("malformed applied positions")

// readApplied decodes what appendApplied wrote, from r. Spans out of order
// or overlapping, or more than maxSpans of one stream, are an error.
func readApplied(r *wire.Reader) (applied, error) {
	n := r.Uvarint()
	if r.Err() != nil || n > maxStreams {
		return nil, errApplied
	}
	a := make(applied, n)
	for range n {
		name := r.String()
		created := int64(r.Uvarint())
		k := r.Uvarint()
		if r.Err() != nil || k > maxSpans {
			return nil, errApplied
		}
		sp := &streamPositions{created: created, pos: make(positions, 0, k)}
		var prev uint64
		for i := range k {
			gap, length := r.Uvarint(), r.Uvarint()
			lo := prev + gap
			hi := lo + length
			if r.Err() != nil || lo < prev || hi < lo || (i > 0 && gap < 2) || lo == 0 {
				return nil, errApplied
			}
			sp.pos = append(sp.pos, span{lo, hi})
			prev = hi
		}
		a[name] = sp
	}
	return a, nil
}

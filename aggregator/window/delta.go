package window

import (
	"errors"
	"fmt"
	"time"

	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/internal/wire"
	"github.com/outpost-siem/outpost/rules"
)

// The state log's records hold what changed the states, not the states:
// each match applied to a state and each deadline expired, in the order
// they were applied (format 2, the Outpost-Log-Format header). A
// checkpoint then costs a few dozen bytes per match, however many events a
// state holds: rewriting every changed state whole, as format 1 did, was
// most of the windows' CPU at 100,000 addresses, and at 1,000 too, where a
// state holds up to 64 events (docs/benchmarks.md).
//
// A restart replays the records after the compaction mark onto what
// Badger holds, through the engine's Apply and Expire with the rules
// loaded now: the same matches in the same order give the same states.
// A delta for a rule no longer loaded, or edited since (its fingerprint is
// in the state key), is skipped, as its state would be. Format 1 records
// (whole states, written before this) are still read.
//
//	entry: kind (deltaMatch | deltaExpire), state, then
//	  deltaMatch:  time (varint ns, from the record's last match), seen
//	               (0, or 1 and varint ns from time), event id (the length
//	               of the prefix it shares with the last match's, the
//	               rest), step (uvarint), value, the carried fields
//	               (count, then name and value each; none but for a rule
//	               whose state keeps them, engine.FromState)
//	  deltaExpire: the watermark Expire was called with (varint ns)
//	state: 0 then the state key the first time a record names it, else
//	  its number in the record (1, 2, ...)
//
// Strings are length-prefixed. Times of a record are close together and
// ids share their prefix (NUIDs): a match takes 10-20 bytes besides its
// value and a new state's key.
const (
	deltaMatch  byte = 'M'
	deltaExpire byte = 'E'

	logFormatHeader = "Outpost-Log-Format"
	logFormatDeltas = "2"
)

// deltaWriter is the encoder state of a record's deltas.
type deltaWriter struct {
	keys  map[string]uint64 // state key: its number in the record
	lastT int64
	last  string // the last match's event id
}

// appendState writes sk's reference.
func (w *deltaWriter) appendState(b []byte, sk string) []byte {
	if n, ok := w.keys[sk]; ok {
		return wire.AppendUvarint(b, n)
	}
	if w.keys == nil {
		w.keys = map[string]uint64{}
	}
	w.keys[sk] = uint64(len(w.keys) + 1)
	return wire.AppendString(wire.AppendUvarint(b, 0), sk)
}

// addMatch records that m was applied to the state sk of r.
func (lr *logRecord) addMatch(sk string, r *rules.Rule, m *event.Match) {
	w := &lr.dw
	b := append(lr.scratch[:0], deltaMatch)
	b = w.appendState(b, sk)
	t := m.Time.UnixNano()
	b = wire.AppendVarint(b, t-w.lastT)
	w.lastT = t
	if m.Seen.IsZero() {
		b = append(b, 0)
	} else {
		b = wire.AppendVarint(append(b, 1), m.Seen.UnixNano()-t)
	}
	p := 0
	for p < len(m.EventID) && p < len(w.last) && m.EventID[p] == w.last[p] {
		p++
	}
	b = wire.AppendUvarint(b, uint64(p))
	b = wire.AppendString(b, m.EventID[p:])
	w.last = m.EventID
	b = wire.AppendUvarint(b, uint64(m.Step))
	b = wire.AppendString(b, m.Value)
	var fields map[string]string
	if engine.FromState(r) {
		fields = m.CarriedFields()
	}
	b = wire.AppendUvarint(b, uint64(len(fields)))
	for k, v := range fields {
		b = wire.AppendString(wire.AppendString(b, k), v)
	}
	lr.scratch = b
	lr.write(b)
	lr.deltas++
}

// addExpire records that the deadline of state sk was expired at
// watermark.
func (lr *logRecord) addExpire(sk string, watermark int64) {
	b := append(lr.scratch[:0], deltaExpire)
	b = lr.dw.appendState(b, sk)
	b = wire.AppendVarint(b, watermark)
	lr.scratch = b
	lr.write(b)
	lr.deltas++
}

// delta is one entry of a format 2 record.
type delta struct {
	kind      byte
	sk        string
	m         event.Match // deltaMatch
	watermark int64       // deltaExpire
}

// errDeltaKind is an entry of an unknown kind: the rest of the record
// cannot be read.
var errDeltaKind = errors.New("unknown state log entry")

// readDeltas calls each for every entry of a format 2 record, in order; a
// record cut short (a crash while it was appended) yields the entries
// before the cut, and the error.
func readDeltas(v []byte, each func(d *delta)) error {
	r := wire.NewReader(v)
	var keys []string
	var lastT int64
	var last string
	for r.Err() == nil && len(r.Rest()) > 0 {
		d := delta{kind: r.Byte()}
		if n := r.Uvarint(); n == 0 {
			d.sk = r.String()
			keys = append(keys, d.sk)
		} else if n <= uint64(len(keys)) {
			d.sk = keys[n-1]
		} else if r.Err() == nil {
			r.Fail(wire.ErrCorrupt)
		}
		switch d.kind {
		case deltaMatch:
			lastT += r.Varint()
			d.m.Time = time.Unix(0, lastT).UTC()
			if r.Byte() == 1 {
				d.m.Seen = time.Unix(0, lastT+r.Varint()).UTC()
			}
			p := r.Uvarint()
			rest := r.String()
			if p > uint64(len(last)) {
				r.Fail(wire.ErrCorrupt)
			} else {
				d.m.EventID = last[:p] + rest
				last = d.m.EventID
			}
			d.m.Step = int(r.Uvarint())
			d.m.Value = r.String()
			if n := r.Count(2); n > 0 {
				d.m.Fields = make(map[string]string, n)
				for range n {
					k := r.String()
					d.m.Fields[k] = r.String()
				}
			}
		case deltaExpire:
			d.watermark = r.Varint()
		default:
			if r.Err() == nil {
				return fmt.Errorf("%w %q", errDeltaKind, d.kind)
			}
		}
		if r.Err() == nil {
			each(&d)
		}
	}
	return r.Done()
}

package window

import (
	"errors"
	"fmt"

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
//	entry: kind (deltaMatch | deltaExpire), state key, then
//	  deltaMatch:  the match (event.AppendMatch, length-prefixed), its carried fields only
//	               for a rule whose state keeps them (engine.FromState)
//	  deltaExpire: the watermark Expire was called with (varint)
const (
	deltaMatch  byte = 'M'
	deltaExpire byte = 'E'

	logFormatHeader = "Outpost-Log-Format"
	logFormatDeltas = "2"
)

// addMatch records that m was applied to the state sk of r.
func (lr *logRecord) addMatch(sk string, r *rules.Rule, m *event.Match) {
	c := *m
	if !engine.FromState(r) {
		c.SetEncodedFields(nil)
	}
	lr.mscratch = event.AppendMatch(lr.mscratch[:0], &c)
	lr.scratch = append(lr.scratch[:0], deltaMatch)
	lr.scratch = wire.AppendString(lr.scratch, sk)
	lr.scratch = wire.AppendUvarint(lr.scratch, uint64(len(lr.mscratch)))
	lr.write(lr.scratch)
	lr.write(lr.mscratch)
	lr.deltas++
}

// addExpire records that the deadline of state sk was expired at
// watermark.
func (lr *logRecord) addExpire(sk string, watermark int64) {
	lr.scratch = append(lr.scratch[:0], deltaExpire)
	lr.scratch = wire.AppendString(lr.scratch, sk)
	lr.scratch = wire.AppendVarint(lr.scratch, watermark)
	lr.write(lr.scratch)
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
	var d delta
	var mr wire.Reader
	for r.Err() == nil && len(r.Rest()) > 0 {
		d = delta{kind: r.Byte(), sk: r.String()}
		switch d.kind {
		case deltaMatch:
			if v := r.View(); r.Err() == nil {
				if err := event.DecodeMatch(v, &d.m, &mr); err != nil {
					return err
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

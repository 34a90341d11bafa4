package filter

import (
	"encoding/binary"

	"github.com/outpost-siem/outpost/aggregator/bus"
)

// chunkBytes bounds a run: the matches one EVENTS message gives one
// partition, in one MATCHES message (bus.HeaderSource). A run starts only
// on a message with room for a whole one, so how an EVENTS message's
// matches are split does not depend on how the events were batched: the
// same message evaluated again gives its partitions the same runs at the
// same positions.
const chunkBytes = bus.MaxRunBytes

// recordOverhead is what bus.AppendRecord adds to a record at most.
const recordOverhead = binary.MaxVarintLen64

// part is what the rule filter keeps of one MATCHES partition.
type part struct {
	// batch is the message being built (bus.AppendRecord), src its runs
	// (each the matches of one EVENTS message, or one chunk of them, a
	// run without position 0) and where its account starts.
	batch []byte
	src   bus.Source
	// runBytes is the bytes of the last run; chunk numbers the runs of
	// the EVENTS message in hand.
	runBytes int
	chunk    int
	// next is the position after the last run since the last failure (0:
	// none), where the next run's account starts.
	next uint64
}

// add appends the encoded match rec of the EVENTS message at source (0:
// unknown) to the partition's message, calling flush first when rec
// starts a run that must begin a new message: one without room for a
// whole run, or one whose account it does not continue.
func (pt *part) add(rec []byte, source uint64, flush func() error) error {
	n := len(rec) + recordOverhead
	pos, ok := bus.SourcePosition(source, pt.chunk)
	if !ok {
		pos = 0
	}
	runs := pt.src.Runs
	last := len(runs) - 1
	if last >= 0 && runs[last].Pos == pos && pos != 0 && pt.runBytes+n > chunkBytes {
		// The run is full: the next chunk of this EVENTS message.
		pt.chunk++
		if pos, ok = bus.SourcePosition(source, pt.chunk); !ok {
			pos = 0
		}
	}
	if last < 0 || runs[last].Pos != pos || (pos == 0 && !bus.Fits(pt.batch, len(rec))) {
		from := pos
		if pos != 0 && pt.next != 0 && pt.next <= pos {
			from = pt.next
		}
		contiguous := last < 0 || (pos != 0 && runs[last].Pos != 0 && from == runs[last].Pos+1)
		roomy := len(pt.batch) == 0 || (len(pt.batch)+chunkBytes <= bus.MaxBatchBytes && bus.Fits(pt.batch, len(rec)))
		if !contiguous || !roomy {
			if err := flush(); err != nil {
				return err
			}
		}
		if len(pt.src.Runs) == 0 {
			pt.src.From = from
		}
		pt.src.Runs = append(pt.src.Runs, bus.SourceRun{Pos: pos})
		pt.runBytes = 0
		if pos != 0 {
			pt.next = max(pt.next, pos+1)
		}
	}
	if pt.batch == nil {
		pt.batch = bus.NewBatch() // freed when JetStream acks the message
	}
	pt.batch = bus.AppendRecord(pt.batch, rec)
	pt.src.Runs[len(pt.src.Runs)-1].N++
	pt.runBytes += n
	return nil
}

// sent forgets the message built, now published (it owns the bytes).
func (pt *part) sent() {
	pt.batch = nil
	pt.src.Runs = pt.src.Runs[:0]
}

// restart starts the partition's account afresh at the EVENTS message at
// source (0: unknown, none), the first of a new series this stage
// evaluates one after the other.
func (pt *part) restart(source uint64) {
	pt.next, _ = bus.SourcePosition(source, 0)
}

// drop forgets the message built and where the account stands: the batch
// will be evaluated again.
func (pt *part) drop() {
	pt.batch = pt.batch[:0]
	pt.src.Runs = pt.src.Runs[:0]
	pt.next = 0
	pt.chunk = 0
}

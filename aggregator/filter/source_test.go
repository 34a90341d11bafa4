package filter

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/outpost-siem/outpost/aggregator/bus"
)

// sentRun is a run as published: its position and its records.
type sentRun struct {
	pos  uint64
	recs [][]byte
}

// collect adds recs of each EVENTS message (by sequence) to one part, in
// order, and returns every run published, and the sizes of the messages.
func collect(t *testing.T, msgs map[uint64][][]byte, order []uint64) ([]sentRun, []int) {
	t.Helper()
	var pt part
	var runs []sentRun
	var sizes []int
	var pending [][]byte // records of the message being built, in order
	flush := func() error {
		if len(pt.batch) == 0 {
			return nil
		}
		if len(pt.batch) > bus.MaxBatchBytes {
			t.Errorf("a message of %d bytes, over %d", len(pt.batch), bus.MaxBatchBytes)
		}
		sizes = append(sizes, len(pt.batch))
		i := 0
		for _, r := range pt.src.Runs {
			runs = append(runs, sentRun{r.Pos, pending[i : i+r.N]})
			i += r.N
		}
		pending = nil
		pt.sent()
		return nil
	}
	for _, seq := range order {
		pt.chunk = 0
		for _, rec := range msgs[seq] {
			if err := pt.add(rec, seq, flush); err != nil {
				t.Fatal(err)
			}
			pending = append(pending, rec)
		}
	}
	_ = flush()
	return runs, sizes
}

// The runs an EVENTS message gives a partition, and their records, are
// the same whatever was batched before it: what the windows skip by
// position is what they applied under it.
func TestRunsDoNotDependOnBatching(t *testing.T) {
	rec := func(seq uint64, i, size int) []byte {
		unit := []byte(fmt.Sprintf("%d-%d.", seq, i))
		return bytes.Repeat(unit, size/len(unit)+1)[:size]
	}
	msgs := map[uint64][][]byte{}
	for i := range 2000 { // 200 KiB: four runs
		msgs[6] = append(msgs[6], rec(6, i, 100))
	}
	for i := range 3000 { // sizes that do not divide a run evenly
		msgs[7] = append(msgs[7], rec(7, i, 50+i%97))
	}
	msgs[7] = append(msgs[7], rec(7, -1, 100_000)) // one record larger than a run
	for i := range 10 {
		msgs[7] = append(msgs[7], rec(7, 3000+i, 60))
	}
	of := func(runs []sentRun, seq uint64) []sentRun {
		var out []sentRun
		for _, r := range runs {
			if r.pos>>16 == seq {
				out = append(out, r)
			}
		}
		return out
	}
	alone, _ := collect(t, msgs, []uint64{7})
	after, sizes := collect(t, msgs, []uint64{6, 7})
	a, b := of(alone, 7), of(after, 7)
	if len(a) < 3 {
		t.Fatalf("message 7 gave %d runs; the test wants several", len(a))
	}
	if !slices.EqualFunc(a, b, func(x, y sentRun) bool {
		return x.pos == y.pos && slices.EqualFunc(x.recs, y.recs, bytes.Equal)
	}) {
		for i := range max(len(a), len(b)) {
			if i < len(a) && i < len(b) {
				t.Logf("run %d: alone pos %d n %d; after 6: pos %d n %d", i, a[i].pos, len(a[i].recs), b[i].pos, len(b[i].recs))
			}
		}
		t.Errorf("message 7's runs differ when batched after message 6 (%d runs alone, %d after)", len(a), len(b))
	}
	if len(sizes) < 2 {
		t.Errorf("%d messages for ~600 KiB of matches", len(sizes))
	}
}

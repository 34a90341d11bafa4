package window

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/outpost-siem/outpost/aggregator/internal/wire"
)

// positions against a plain set: random adds, unions and bounds keep the
// spans sorted, disjoint and non-adjacent, and hold exactly what was put.
func TestPositionsAgreeWithASet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var p positions
		want := map[uint64]bool{}
		for range rng.IntN(300) {
			switch rng.IntN(3) {
			case 0: // in order, as a consumer hands them
				seq := uint64(1)
				if n := len(p); n > 0 {
					seq = p[n-1].hi + 1 + uint64(rng.IntN(3))
				}
				p.add(seq)
				want[seq] = true
			case 1:
				seq := 1 + uint64(rng.IntN(400))
				p.add(seq)
				want[seq] = true
			case 2:
				var q positions
				lo := 1 + uint64(rng.IntN(400))
				for range rng.IntN(4) {
					hi := lo + uint64(rng.IntN(5))
					q = append(q, span{lo, hi})
					for s := lo; s <= hi; s++ {
						want[s] = true
					}
					lo = hi + 2 + uint64(rng.IntN(20))
				}
				p.union(q)
			}
		}
		checkSpans(t, p)
		for seq := uint64(0); seq < 800; seq++ {
			if p.has(seq) != want[seq] {
				t.Fatalf("round %d: has(%d) = %v, want %v (%v)", round, seq, p.has(seq), want[seq], p)
			}
		}
		// Bounded, it holds less (the lowest spans forgotten), never
		// more: a position it never held is not taken as held.
		b := slices.Clone(p)
		b.bound(3)
		checkSpans(t, b)
		if len(b) > 3 {
			t.Fatalf("bound(3) left %d spans", len(b))
		}
		for seq := uint64(0); seq < 800; seq++ {
			if b.has(seq) && !want[seq] {
				t.Fatalf("round %d: bound made %d held", round, seq)
			}
		}
		if len(p) > 3 && !slices.Equal(b, p[len(p)-3:]) {
			t.Fatalf("bound did not keep the highest spans: %v from %v", b, p)
		}
	}
}

// The last position there is: no sum past it wraps around to put a span
// out of order.
func TestPositionsAtTheEnd(t *testing.T) {
	const top = ^uint64(0)
	var p positions
	p.add(top)
	p.add(5)
	p.add(top - 1)
	p.union(positions{{1, 2}, {top, top}})
	checkSpans(t, p)
	for _, seq := range []uint64{1, 2, 5, top - 1, top} {
		if !p.has(seq) {
			t.Errorf("%d not held: %v", seq, p)
		}
	}
	if p.has(3) || p.has(top-2) {
		t.Errorf("holds what was not put: %v", p)
	}
}

func checkSpans(t *testing.T, p positions) {
	t.Helper()
	for i, s := range p {
		if s.lo > s.hi || (i > 0 && s.lo <= p[i-1].hi+1) {
			t.Fatalf("spans not sorted, disjoint and apart at %d: %v", i, p)
		}
	}
}

func TestAppliedRoundTripsAndStartsAfreshForAStreamMadeAgain(t *testing.T) {
	a := applied{}
	for seq := uint64(5); seq < 50; seq++ {
		if seq%10 != 0 {
			a.add("MATCHES", 100, seq, seq)
		}
	}
	a.add("EVENTS", 7, 1<<40, 1<<40)
	r := wire.NewReader(appendApplied(nil, a))
	got, err := readApplied(r)
	if err == nil {
		err = r.Done()
	}
	if err != nil {
		t.Fatal(err)
	}
	for name, sp := range a {
		if g := got[name]; g == nil || g.created != sp.created || !slices.Equal(g.pos, sp.pos) {
			t.Errorf("%s read back as %+v, want %+v", name, g, sp)
		}
	}
	// The stream made again: its old positions do not count.
	a.add("MATCHES", 200, 3, 3)
	if a.holds("MATCHES", 5) || !a.holds("MATCHES", 3) {
		t.Errorf("after MATCHES was made again: %+v", a["MATCHES"])
	}
	got.only(map[string]int64{"MATCHES": 200, "EVENTS": 7})
	if got["MATCHES"] != nil || got["EVENTS"] == nil {
		t.Errorf("only kept %v", got)
	}
	// A union with a newer stream's positions replaces the older ones.
	old := applied{}
	old.add("MATCHES", 100, 9, 9)
	old.union(a)
	if old.holds("MATCHES", 9) || !old.holds("MATCHES", 3) {
		t.Errorf("union kept the older stream's positions: %+v", old["MATCHES"])
	}
}

// FuzzReadApplied: whatever the bytes, readApplied returns positions that
// are sorted, disjoint and bounded, or an error; never a panic.
func FuzzReadApplied(f *testing.F) {
	a := applied{}
	for _, seq := range []uint64{1, 2, 3, 7, 9, 10, 1 << 50} {
		a.add("MATCHES", 1733000000000000000, seq, seq)
	}
	f.Add(appendApplied(nil, a))
	f.Add(appendApplied(nil, applied{}))
	f.Add([]byte{1, 1, 'M', 0, 2, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := readApplied(wire.NewReader(b))
		if err != nil {
			return
		}
		for _, sp := range got {
			if len(sp.pos) > maxSpans {
				t.Fatalf("%d spans", len(sp.pos))
			}
			checkSpans(t, sp.pos)
		}
	})
}

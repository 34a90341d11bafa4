package bus

import (
	"slices"
	"testing"
)

// FuzzParseSource: any header value reads or is refused, never panics;
// what reads has runs in increasing positions from FROM on, and counts
// that are not negative.
func FuzzParseSource(f *testing.F) {
	for _, seed := range []string{"65536 0:3", "65536 0:2 65536:1 1:4", "1 0:0", "", "0 0:1", "65536", "65536 1", "65536 0:1 0:1", "18446744073709551615 1:1", "7 -1:2", "7 0:-2", "7  0:1"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, v string) {
		src, ok := ParseSource(v)
		if !ok {
			return
		}
		if src.From == 0 || len(src.Runs) == 0 {
			t.Fatalf("%q read as %+v", v, src)
		}
		prev := src.From
		for i, r := range src.Runs {
			if r.Pos < prev || (i > 0 && r.Pos == prev) || r.N < 0 {
				t.Fatalf("%q: run %d %+v after %d", v, i, r, prev)
			}
			prev = r.Pos
		}
		if again, ok := ParseSource(src.Format()); !ok || !slices.Equal(again.Runs, src.Runs) || again.From != src.From {
			t.Fatalf("%q formats as %q, which reads as %+v", v, src.Format(), again)
		}
	})
}

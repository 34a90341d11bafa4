package engine

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/outpost-siem/outpost/aggregator/internal/wire"
)

// The front coder compares eight bytes at a time and the reader parses its
// varints itself; both must write and read exactly what the plain byte
// loops below do, whatever the strings share (within a word, across one,
// none, all of a shorter string, multi-byte characters, empty strings).
func TestFrontCodingIsThePlainOne(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "b", "Z", "0", "ü", "\x00", "\xff"}
	for round := range 2000 {
		n := 2 + rng.IntN(70)
		ss := make([]string, n)
		prev := ""
		for i := range ss {
			p := 0
			if len(prev) > 0 {
				p = rng.IntN(len(prev) + 1)
			}
			var sb strings.Builder
			sb.WriteString(prev[:p])
			for range rng.IntN(30) {
				sb.WriteString(alphabet[rng.IntN(len(alphabet))])
			}
			ss[i] = sb.String()
			prev = ss[i]
		}
		got, want := appendFront(nil, ss), appendFrontPlain(nil, ss)
		if string(got) != string(want) {
			t.Fatalf("round %d: %q\nfast  %x\nplain %x", round, ss, got, want)
		}
		var r wire.Reader
		r.Reset(got, false)
		budget := 32*len(got) + 1024
		back := readFront(&r, &budget)
		if err := r.Done(); err != nil || !reflect.DeepEqual(back, ss) {
			t.Fatalf("round %d: read back %q, %v; want %q", round, back, err, ss)
		}
	}
}

// The times' unit: whole seconds by the constant path, others by the loop,
// as the plain coder picked them.
func TestTimesCodingIsThePlainOne(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 2000 {
		unit := int64(1)
		for range rng.IntN(10) {
			unit *= 10
		}
		times := make([]int64, 1+rng.IntN(40))
		cur := (1_796_400_000 + rng.Int64N(1000)) * 1_000_000_000
		for i := range times {
			if rng.IntN(4) > 0 {
				cur += rng.Int64N(100) * unit
			}
			times[i] = cur
		}
		if round%7 == 0 {
			times[0] = rng.Int64() // any first time, wrapping deltas
		}
		got, want := appendTimes(nil, times), appendTimesPlain(nil, times)
		if string(got) != string(want) {
			t.Fatalf("round %d: %v\nfast  %x\nplain %x", round, times, got, want)
		}
	}
}

func appendFrontPlain(b []byte, ss []string) []byte {
	b = wire.AppendUvarint(b, uint64(len(ss)))
	prev := ""
	for _, s := range ss {
		p := 0
		for p < len(s) && p < len(prev) && s[p] == prev[p] {
			p++
		}
		b = wire.AppendUvarint(b, uint64(p))
		b = wire.AppendString(b, s[p:])
		prev = s
	}
	return b
}

func appendTimesPlain(b []byte, times []int64) []byte {
	b = wire.AppendUvarint(b, uint64(len(times)))
	if len(times) == 0 {
		return b
	}
	e, unit := 9, int64(1_000_000_000)
	for e > 0 {
		prev, ok := int64(0), true
		for _, t := range times {
			if (t-prev)%unit != 0 {
				ok = false
				break
			}
			prev = t
		}
		if ok {
			break
		}
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

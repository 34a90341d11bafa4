package engine

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"math"
	"reflect"
	"slices"
	"strconv"
	"testing"

	"github.com/nats-io/nuid"

	"github.com/outpost-siem/outpost/aggregator/internal/wire"
)

func fullState() *State {
	return &State{
		Times: []int64{1_700_000_000_000_000_000, 1_700_000_001_000_000_000, 1_700_000_001_000_000_000},
		IDs:   []string{"a", "b", "c"}, Steps: []uint8{0, 1, 2}, Values: []string{"u1", "u2", "ü3"},
		LastAlert: 1_700_000_000_500_000_000, Spent: 1_699_999_999_000_000_000, SpentIDs: []string{"z"},
		First: -5, Seen: []string{"x", ""}, Deadline: 1_700_000_600_000_000_000, Since: 42, SinceID: "s",
		SinceFields: map[string]string{"host": "web-01", "app": ""},
	}
}

// stateV1Golden is fullState (without SinceFields) as version 1 wrote it.
const stateV1Golden = "01038080d0e2c6bfce972f80a8d6b9070003016101620163030002040302753102753203c3bc338094bbbfcabfce972f80d8f9a8bfbfce972f01017a090201780080c09b8fbde2ce972f540173"

// stateV2Golden is fullState as version 2 wrote it.
const stateV2Golden = "02038080d0e2c6bfce972f80a8d6b9070003016101620163030002040302753102753203c3bc338094bbbfcabfce972f80d8f9a8bfbfce972f01017a090201780080c09b8fbde2ce972f54017302036170700004686f7374067765622d3031"

// State written by version 2 (times in nanoseconds, strings whole) still
// reads.
func TestStateCodecReadsV2(t *testing.T) {
	v, err := hex.DecodeString(stateV2Golden)
	if err != nil {
		t.Fatal(err)
	}
	var got State
	if err := DecodeState(v, &got); err != nil || !reflect.DeepEqual(&got, fullState()) {
		t.Errorf("got %+v, %v\nwant %+v", got, err, *fullState())
	}
}

// nuidState is a threshold state as the pipeline keeps one: n events a
// few seconds apart with ids from one process's NUID sequence.
func nuidState(n int) *State {
	st := &State{}
	gen := nuid.New()
	t := int64(1_796_400_000_000_000_000)
	for i := range n {
		for range 1000 { // other keys' events in between
			gen.Next()
		}
		t += int64(1+i%7) * 1_000_000_000
		st.Times = append(st.Times, t)
		st.IDs = append(st.IDs, gen.Next())
	}
	st.Spent, st.SpentIDs = st.Times[0], []string{st.IDs[0]}
	return st
}

// Version 3 is what the pipeline's states need it to be: about three times
// smaller than version 2 for ids from one process and times in seconds.
func TestStateCodecV3IsSmall(t *testing.T) {
	st := nuidState(64)
	v3 := AppendState(nil, st)
	v2 := 1 + len(st.Times)*5 + len(st.IDs)*23 + 30
	if len(v3)*5/2 > v2 {
		t.Errorf("version 3: %d bytes for 64 events; version 2 takes about %d", len(v3), v2)
	}
	t.Logf("64 events: %d bytes (%.1f per event)", len(v3), float64(len(v3))/64)
}

// State written by version 1 of the binary encoding still reads, with no
// absence fields.
func TestStateCodecReadsV1(t *testing.T) {
	v, err := hex.DecodeString(stateV1Golden)
	if err != nil {
		t.Fatal(err)
	}
	want := fullState()
	want.SinceFields = nil
	var got State
	if err := DecodeState(v, &got); err != nil || !reflect.DeepEqual(&got, want) {
		t.Errorf("got %+v, %v\nwant %+v", got, err, *want)
	}
}

func TestStateCodecRoundTrip(t *testing.T) {
	for _, st := range []*State{
		fullState(), {}, {Times: []int64{-1, 0, 1}, IDs: []string{"", "", ""}}, nuidState(200),
		// Deltas that wrap around int64, and one not a multiple of 10.
		{Times: []int64{math.MinInt64, math.MaxInt64, 0, 7}, IDs: []string{"ab", "abc", "a", "abc"}},
		{Times: []int64{5_000_000_000, 9_000_000_000, 9_000_000_000, 12_000_000_000}, IDs: []string{"a", "b", "c", "d"}, Values: []string{"10.0.0.1", "10.0.0.1", "10.0.0.12", ""}, Seen: []string{"x", "x"}},
	} {
		var got State
		if err := DecodeState(AppendState(nil, st), &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&got, st) {
			t.Errorf("round trip\n got %+v\nwant %+v", got, *st)
		}
	}
}

// EncodeState is AppendState's encoding in a slice of its length, however
// large the state and whatever its scratch held before.
func TestEncodeStateIsExact(t *testing.T) {
	for _, st := range []*State{nuidState(2000), fullState(), {}, nuidState(80), nuidState(3)} {
		got, want := EncodeState(st), AppendState(nil, st)
		if !bytes.Equal(got, want) {
			t.Errorf("EncodeState %x, want %x", got, want)
		}
		if cap(got) != len(got) {
			t.Errorf("EncodeState: %d bytes in %d", len(got), cap(got))
		}
	}
}

// A state read back is read for a match, which most often adds one event
// at its end: its lists have room for it, so the match does not copy them
// into larger ones (an allocation per list per state read back, ~9% of
// what the windows allocated at 100,000 keys; docs/benchmarks.md).
func TestDecodedStateHasRoomForOneMore(t *testing.T) {
	st := nuidState(10)
	st.Steps = make([]uint8, len(st.Times))
	var got State
	if err := DecodeState(AppendState(nil, st), &got); err != nil {
		t.Fatal(err)
	}
	n := len(got.Times)
	times, ids, steps := &got.Times[0], &got.IDs[0], &got.Steps[0]
	got.Times = insertAt(got.Times, n, got.Times[n-1]+1)
	got.IDs = insertAt(got.IDs, n, "one-more")
	got.Steps = insertAt(got.Steps, n, 0)
	if &got.Times[0] != times || &got.IDs[0] != ids || &got.Steps[0] != steps {
		t.Errorf("adding an event to a decoded state copied its lists (times %v, ids %v, steps %v)", &got.Times[0] != times, &got.IDs[0] != ids, &got.Steps[0] != steps)
	}
}

// State written as JSON by versions before the binary encoding still reads.
func TestStateCodecReadsJSON(t *testing.T) {
	old, err := json.Marshal(fullState())
	if err != nil {
		t.Fatal(err)
	}
	var got State
	if err := DecodeState(old, &got); err != nil || !reflect.DeepEqual(&got, fullState()) {
		t.Errorf("got %+v, %v", got, err)
	}
	if len(AppendState(nil, fullState())) >= len(old) {
		t.Errorf("binary %d bytes, JSON %d", len(AppendState(nil, fullState())), len(old))
	}
}

// A state's JSON from before the binary encoding has its steps as numbers.
func TestStateCodecReadsJSONSteps(t *testing.T) {
	var got State
	if err := DecodeState([]byte(`{"t":[1,2,3],"i":["a","b","c"],"p":[0,1,2]}`), &got); err != nil || !slices.Equal(got.Steps, []uint8{0, 1, 2}) {
		t.Errorf("steps %v, %v", got.Steps, err)
	}
}

// A step past rules.MaxSteps is damage, not a step wrapped into a byte.
func TestStateCodecRejectsStepOutOfRange(t *testing.T) {
	st := &State{Times: []int64{1e18}, IDs: []string{"a"}, Steps: []uint8{7}}
	v := AppendState(nil, st)
	at := bytes.Index(v, []byte{1, 14}) // one step, 7 zigzagged
	if at < 0 {
		t.Fatalf("no step 7 in %x", v)
	}
	for _, k := range []int64{255, 300, -1} {
		bad := append(wire.AppendVarint(append([]byte(nil), v[:at+1]...), k), v[at+2:]...)
		var got State
		if err := DecodeState(bad, &got); err == nil {
			t.Errorf("step %d: no error, steps %v", k, got.Steps)
		}
	}
	var got State
	if err := DecodeState(v, &got); err != nil || !slices.Equal(got.Steps, []uint8{7}) {
		t.Errorf("step 7: %v, %v", got.Steps, err)
	}
}

// A state whose lists are not as long as its times is damage: Apply
// indexes them together and would panic on it.
func TestStateCodecRejectsListsOfOtherLengths(t *testing.T) {
	r := loadRule(t, failThenOK)
	for _, bad := range []*State{
		{Times: []int64{1e18, 2e18, 3e18}, IDs: []string{"a", "b"}},
		{Times: []int64{1e18, 2e18}, IDs: []string{"a", "b"}, Steps: []uint8{0}},
		{Times: []int64{1e18}, IDs: []string{"a"}, Values: []string{"x", "y"}},
	} {
		for _, enc := range [][]byte{AppendState(nil, bad), mustJSON(t, bad)} {
			var st State
			if err := DecodeState(enc, &st); err == nil {
				t.Errorf("%+v decoded without error; Apply on it would index %d times", *bad, len(st.Times))
				Apply(r, &st, match(0, 5, "z", ""), 0)
			}
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStateCodecRejectsDamage(t *testing.T) {
	v := AppendState(nil, fullState())
	for n := range len(v) {
		var st State
		if err := DecodeState(v[:n], &st); err == nil {
			t.Fatalf("truncated to %d of %d bytes: no error", n, len(v))
		}
	}
	var st State
	if err := DecodeState(append([]byte{7}, v[1:]...), &st); err == nil {
		t.Error("unknown version: no error")
	}
	// Front coding lets a string repeat the one before plus a byte: 3,000
	// such ids would decode to 4.5 MB from 9 KB. The decoder refuses to
	// grow past a bound instead.
	bomb := []byte{stateV3, 0}
	bomb = wire.AppendUvarint(bomb, 3000)
	for i := range 3000 {
		bomb = wire.AppendUvarint(bomb, uint64(i))
		bomb = wire.AppendString(bomb, "x")
	}
	if err := DecodeState(bomb, &st); err == nil {
		t.Errorf("a front-coded list decoding to %d bytes from %d: no error", 3000*3001/2, len(bomb))
	}
	// A prefix longer than the string before it.
	bad := []byte{stateV3, 0, 2, 0, 1, 'a', 5, 1, 'b'}
	if err := DecodeState(bad, &st); err == nil {
		t.Error("a prefix longer than the string before: no error")
	}
}

// Damaged JSON state is an error, never a crash. A key cut short after a
// backslash made github.com/goccy/go-json (used here before) read past the
// end of its buffer and panic, depending on what lay beyond it
// (goccy/go-json#604): many rounds with small allocations around make
// that likely, not certain.
func TestStateCodecDamagedJSON(t *testing.T) {
	for _, v := range []string{`{"\`, `{"t\`, `{"t":[1],"\`, `{"\u`, `{"records":[{"\`} {
		for range 5000 {
			neighbours = append(neighbours[:0], bytes.Repeat([]byte("A"), 8), bytes.Repeat([]byte("A"), 16))
			var st State
			if err := DecodeState([]byte(v), &st); err == nil {
				t.Fatalf("%q: no error", v)
			}
		}
	}
}

// neighbours keeps TestStateCodecDamagedJSON's small allocations on the heap.
var neighbours [][]byte

func FuzzDecodeState(f *testing.F) {
	f.Add(AppendState(nil, fullState()))
	f.Add(AppendState(nil, nuidState(20)))
	if v2, err := hex.DecodeString(stateV2Golden); err == nil {
		f.Add(v2)
	}
	f.Add(AppendState(nil, &State{}))
	if v1, err := hex.DecodeString(stateV1Golden); err == nil {
		f.Add(v1)
	}
	f.Add([]byte(`{"t":[1,2],"i":["a","b"]}`))
	f.Add([]byte(`{"\`)) // goccy/go-json read past its buffer on this (goccy/go-json#604)
	f.Fuzz(func(t *testing.T, data []byte) {
		var st State
		if len(data) > 0 && data[0] == '{' {
			_ = DecodeState(data, &st) // JSON: encoding/json's own fuzzing covers it
			return
		}
		if DecodeState(data, &st) != nil {
			return
		}
		var again State
		if err := DecodeState(AppendState(nil, &st), &again); err != nil || !reflect.DeepEqual(st, again) {
			t.Fatalf("unstable: %+v\n%+v %v", st, again, err)
		}
	})
}

// BenchmarkDecodeState decodes a state of 10, 64 and 200 events, as a
// windows stage reads back a state it let go of.
func BenchmarkDecodeState(b *testing.B) {
	for _, n := range []int{10, 64, 200} {
		enc := AppendState(nil, nuidState(n))
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(enc)))
			var st State
			for b.Loop() {
				if err := DecodeState(enc, &st); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncodeState encodes a state of 10, 64 and 200 events, as a
// checkpoint encodes each state it seals.
func BenchmarkEncodeState(b *testing.B) {
	for _, n := range []int{10, 64, 200} {
		st := nuidState(n)
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(AppendState(nil, st))))
			for b.Loop() {
				EncodeState(st)
			}
		})
	}
}

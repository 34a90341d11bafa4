package engine

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"testing"
)

func fullState() *State {
	return &State{
		Times: []int64{1_700_000_000_000_000_000, 1_700_000_001_000_000_000, 1_700_000_001_000_000_000},
		IDs:   []string{"a", "b", "c"}, Steps: []int{0, 1, 2}, Values: []string{"u1", "u2", "ü3"},
		LastAlert: 1_700_000_000_500_000_000, Spent: 1_699_999_999_000_000_000, SpentIDs: []string{"z"},
		First: -5, Seen: []string{"x", ""}, Deadline: 1_700_000_600_000_000_000, Since: 42, SinceID: "s",
		SinceFields: map[string]string{"host": "web-01", "app": ""},
	}
}

// stateV1Golden is fullState (without SinceFields) as version 1 wrote it.
const stateV1Golden = "01038080d0e2c6bfce972f80a8d6b9070003016101620163030002040302753102753203c3bc338094bbbfcabfce972f80d8f9a8bfbfce972f01017a090201780080c09b8fbde2ce972f540173"

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
	for _, st := range []*State{fullState(), {}, {Times: []int64{-1, 0, 1}, IDs: []string{"", "", ""}}} {
		var got State
		if err := DecodeState(AppendState(nil, st), &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&got, st) {
			t.Errorf("round trip\n got %+v\nwant %+v", got, *st)
		}
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

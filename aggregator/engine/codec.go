package engine

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/outpost-siem/outpost/aggregator/internal/wire"
)

// The first byte of a State's binary encoding in Badger: its version.
// stateV2 added SinceFields at the end; a stateV1 value is the same without
// them. A value starting with '{' is the JSON that versions before the
// binary encoding wrote. All three are still read.
const (
	stateV1 = 1
	stateV2 = 2
)

// AppendState appends st's binary encoding: times as deltas from the one
// before (they are sorted), the rest in declaration order.
func AppendState(b []byte, st *State) []byte {
	b = append(b, stateV2)
	b = wire.AppendUvarint(b, uint64(len(st.Times)))
	prev := int64(0)
	for _, t := range st.Times {
		b = wire.AppendVarint(b, t-prev)
		prev = t
	}
	b = appendStrings(b, st.IDs)
	b = wire.AppendUvarint(b, uint64(len(st.Steps)))
	for _, s := range st.Steps {
		b = wire.AppendVarint(b, int64(s))
	}
	b = appendStrings(b, st.Values)
	b = wire.AppendVarint(b, st.LastAlert)
	b = wire.AppendVarint(b, st.Spent)
	b = appendStrings(b, st.SpentIDs)
	b = wire.AppendVarint(b, st.First)
	b = appendStrings(b, st.Seen)
	b = wire.AppendVarint(b, st.Deadline)
	b = wire.AppendVarint(b, st.Since)
	b = wire.AppendString(b, st.SinceID)
	// Sorted keys: the same state always encodes to the same bytes.
	keys := slices.Sorted(maps.Keys(st.SinceFields))
	b = wire.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = wire.AppendString(b, k)
		b = wire.AppendString(b, st.SinceFields[k])
	}
	return b
}

// DecodeState reads AppendState's encoding, or the JSON of older versions.
func DecodeState(v []byte, st *State) error {
	*st = State{}
	if len(v) > 0 && v[0] == '{' {
		return json.Unmarshal(v, st)
	}
	// The strings (event ids, values) share one copy of v: one
	// allocation instead of one per event.
	var r wire.Reader
	r.Reset(v, true)
	ver := r.Byte()
	if ver != stateV1 && ver != stateV2 && r.Err() == nil {
		return fmt.Errorf("window state encoding version %d unknown", ver)
	}
	if n := r.Count(1); n > 0 {
		st.Times = make([]int64, n)
		prev := int64(0)
		for i := range n {
			prev += r.Varint()
			st.Times[i] = prev
		}
	}
	st.IDs = readStrings(&r)
	if n := r.Count(1); n > 0 {
		st.Steps = make([]int, n)
		for i := range n {
			st.Steps[i] = r.Int()
		}
	}
	st.Values = readStrings(&r)
	st.LastAlert = r.Varint()
	st.Spent = r.Varint()
	st.SpentIDs = readStrings(&r)
	st.First = r.Varint()
	st.Seen = readStrings(&r)
	st.Deadline = r.Varint()
	st.Since = r.Varint()
	st.SinceID = r.String()
	if ver == stateV2 {
		if n := r.Count(2); n > 0 {
			st.SinceFields = make(map[string]string, n)
			for range n {
				k := r.String()
				st.SinceFields[k] = r.String()
			}
		}
	}
	return r.Done()
}

func appendStrings(b []byte, ss []string) []byte {
	b = wire.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = wire.AppendString(b, s)
	}
	return b
}

// readStrings reads appendStrings' encoding; none reads as nil.
func readStrings(r *wire.Reader) []string {
	n := r.Count(1)
	if n == 0 {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = r.String()
	}
	return ss
}

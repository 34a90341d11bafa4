package window

import (
	"bytes"
	"maps"
	"testing"
	"testing/fstest"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

// deltaRules are a rule whose state keeps the match's fields (absence) and
// one whose state does not.
const deltaRules = absenceRule + thresholdRule

func deltaSet(t testing.TB) *rules.Set {
	t.Helper()
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte("rules:" + deltaRules + "\n")}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// deltaRecord is a record of matches of both rules over three hosts, with
// ids that share their prefix and times that go back and forth, and two
// expiries.
func deltaRecord(t testing.TB, set *rules.Set) (*logRecord, []delta) {
	rec := &logRecord{chunk: 64} // parts of 64 bytes: entries span them
	var want []delta
	for i := range 12 {
		r := set.Rule([]string{"silent", "many"}[i%2])
		host := []string{"a", "b", "c"}[i%3]
		at := t0.Add(time.Duration(i*7%5) * time.Second)
		m := &event.Match{RuleID: r.ID, Key: "host=" + host, Time: at, EventID: "EVT0000000000" + string(rune('A'+i)), Step: i % 2, Value: "v" + host}
		if i%4 != 0 {
			m.Seen = at.Add(time.Duration(i-6) * time.Millisecond)
		}
		if r.ID == "silent" {
			m.Fields = map[string]string{"host": host}
		}
		sk := stateKey(r, m.Key)
		rec.addMatch(sk, r, m)
		d := delta{kind: deltaMatch, sk: sk, m: event.Match{Time: m.Time.UTC(), Seen: m.Seen, EventID: m.EventID, Step: m.Step, Value: m.Value}}
		if !m.Seen.IsZero() {
			d.m.Seen = m.Seen.UTC()
		}
		if r.ID == "silent" {
			d.m.Fields = m.Fields
		}
		want = append(want, d)
		if i%5 == 4 {
			rec.addExpire(sk, at.Add(time.Hour).UnixNano())
			want = append(want, delta{kind: deltaExpire, sk: sk, watermark: at.Add(time.Hour).UnixNano()})
		}
	}
	return rec, want
}

func join(parts [][]byte) []byte { return bytes.Join(parts, nil) }

// What a record's deltas read back is what was applied: the state, the
// match's time, reception, id, step, value, and the fields only where the
// rule's state keeps them.
func TestDeltasRoundTrip(t *testing.T) {
	set := deltaSet(t)
	rec, want := deltaRecord(t, set)
	var got []delta
	if err := readDeltas(join(rec.parts()), func(d *delta) { got = append(got, *d) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("read %d deltas, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.kind != w.kind || g.sk != w.sk || g.watermark != w.watermark || !g.m.Time.Equal(w.m.Time) || !g.m.Seen.Equal(w.m.Seen) ||
			g.m.EventID != w.m.EventID || g.m.Step != w.m.Step || g.m.Value != w.m.Value || !maps.Equal(g.m.Fields, w.m.Fields) {
			t.Errorf("delta %d: got %+v, want %+v", i, g, w)
		}
	}
	// Cut anywhere, a record yields the entries before the cut, in order.
	data := join(rec.parts())
	for cut := range len(data) {
		var n int
		_ = readDeltas(data[:cut], func(d *delta) {
			if d.sk != want[n].sk || d.kind != want[n].kind {
				t.Fatalf("cut at %d: delta %d is %q %q, want %q %q", cut, n, d.kind, d.sk, want[n].kind, want[n].sk)
			}
			n++
		})
	}
}

// FuzzReadDeltas: no input makes the reader panic or loop, and a record
// read back and written again reads back the same.
func FuzzReadDeltas(f *testing.F) {
	set := deltaSet(f)
	rec, _ := deltaRecord(f, set)
	f.Add(join(rec.parts()))
	f.Add([]byte{deltaMatch, 0, 3, 'w', '/', 'x', 2, 1, 2, 0, 0, 0, 0, 0})
	f.Add([]byte{deltaExpire, 7, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		var ds []delta
		_ = readDeltas(data, func(d *delta) { ds = append(ds, *d) })
		again := &logRecord{chunk: 1 << 16}
		for _, d := range ds {
			switch d.kind {
			case deltaMatch:
				r := set.Rule("many")
				if len(d.m.Fields) > 0 {
					r = set.Rule("silent")
				}
				again.addMatch(d.sk, r, &d.m)
			case deltaExpire:
				again.addExpire(d.sk, d.watermark)
			}
		}
		var back []delta
		if err := readDeltas(join(again.parts()), func(d *delta) { back = append(back, *d) }); err != nil {
			t.Fatalf("a record written from read deltas does not read back: %v", err)
		}
		if len(back) != len(ds) {
			t.Fatalf("read back %d deltas, want %d", len(back), len(ds))
		}
		for i := range ds {
			if back[i].sk != ds[i].sk || back[i].m.EventID != ds[i].m.EventID || !back[i].m.Time.Equal(ds[i].m.Time) || back[i].watermark != ds[i].watermark {
				t.Fatalf("delta %d read back as %+v, was %+v", i, back[i], ds[i])
			}
		}
	})
}

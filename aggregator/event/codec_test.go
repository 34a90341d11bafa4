package event

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sampleEvent() *Event {
	return &Event{
		ID: "syslog-1-42", Source: "syslog",
		Time:     time.Date(2026, 11, 23, 10, 0, 0, 123456000, time.FixedZone("", 2*3600)),
		Received: time.Date(2026, 11, 23, 8, 0, 1, 0, time.UTC),
		Sender:   "127.0.0.1:5514", Host: "vm-app-01", App: "sshd", ProcID: "812", MsgID: "-",
		Facility: 4, Severity: 6, Message: "Failed password for root from 203.0.113.9 port 52113 ssh2",
		Category: "authentication", Action: "logon", Outcome: "failure", User: "root",
		SrcIP: "203.0.113.9", SrcPort: 52113, DstIP: "10.0.0.4", DstPort: 22, Protocol: "tcp",
		Attrs: map[string]string{"origin.ip": "10.0.0.4", "é": "ünïcode\n"},
	}
}

func sampleMatch() *Match {
	return &Match{
		RuleID: "ssh-brute-force", Key: "203.0.113.9", Time: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC),
		EventID: "syslog-1-42", Step: 2, Value: "root",
		Seen:   time.Date(2026, 11, 23, 10, 0, 0, 0, time.FixedZone("", -5*3600)),
		Fields: map[string]string{"user": "root"},
	}
}

// jsonOf is the comparison: the binary form must keep everything JSON keeps
// (times to the nanosecond with their offset).
func jsonOf(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestEventRoundTrip(t *testing.T) {
	for _, ev := range []*Event{sampleEvent(), {}, {ID: "x", Time: time.Unix(0, 1).UTC(), Attrs: map[string]string{}}} {
		var got Event
		if err := DecodeEvent(AppendEvent(nil, ev), &got, nil); err != nil {
			t.Fatal(err)
		}
		want := jsonOf(t, ev)
		if ev.Attrs != nil && len(ev.Attrs) == 0 {
			want = jsonOf(t, &Event{ID: ev.ID, Time: ev.Time}) // an empty map reads as none
		}
		if g := jsonOf(t, &got); g != want {
			t.Errorf("round trip\n got %s\nwant %s", g, want)
		}
	}
	var got Event
	if err := DecodeEvent(AppendEvent(nil, &Event{}), &got, nil); err != nil || !got.Time.IsZero() || !got.Received.IsZero() {
		t.Errorf("zero times: %v %v %v", got.Time, got.Received, err)
	}
}

func TestMatchRoundTrip(t *testing.T) {
	for _, m := range []*Match{sampleMatch(), {}} {
		var got Match
		if err := DecodeMatch(AppendMatch(nil, m), &got, nil); err != nil {
			t.Fatal(err)
		}
		if g, w := jsonOf(t, &got), jsonOf(t, m); g != w {
			t.Errorf("round trip\n got %s\nwant %s", g, w)
		}
	}
}

// A Match's JSON leaves out a zero Seen (`omitzero`, which encoding/json
// has had since Go 1.24 and github.com/goccy/go-json, used before, ignored:
// it wrote "seen":"0001-01-01T00:00:00Z").
func TestMatchJSONOmitsZeroSeen(t *testing.T) {
	if got := jsonOf(t, &Match{RuleID: "r", Time: time.Unix(0, 0).UTC()}); strings.Contains(got, "seen") {
		t.Errorf("zero Seen written: %s", got)
	}
	if got := jsonOf(t, sampleMatch()); !strings.Contains(got, `"seen":"2026-11-23T10:00:00-05:00"`) {
		t.Errorf("Seen missing: %s", got)
	}
}

func TestDecodeRejectsDamage(t *testing.T) {
	rec := AppendEvent(nil, sampleEvent())
	for n := range len(rec) {
		var ev Event
		if err := DecodeEvent(rec[:n], &ev, nil); err == nil {
			t.Fatalf("truncated to %d of %d bytes: no error", n, len(rec))
		}
	}
	var ev Event
	if err := DecodeEvent(append(rec[:len(rec):len(rec)], 0), &ev, nil); err == nil {
		t.Error("trailing byte: no error")
	}
	bad := append([]byte{9}, rec[1:]...)
	if err := DecodeEvent(bad, &ev, nil); err == nil {
		t.Error("unknown version: no error")
	}
	m := AppendMatch(nil, sampleMatch())
	for n := range len(m) {
		var got Match
		if err := DecodeMatch(m[:n], &got, nil); err == nil {
			t.Fatalf("match truncated to %d of %d bytes: no error", n, len(m))
		}
	}
	// A count far beyond what the record can hold fails without allocating it.
	huge := []byte{matchV1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}
	var got Match
	if err := DecodeMatch(huge, &got, nil); err == nil {
		t.Error("huge field count: no error")
	}
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add(AppendEvent(nil, sampleEvent()))
	f.Add(AppendEvent(nil, &Event{}))
	f.Add([]byte{eventV1})
	f.Fuzz(func(t *testing.T, data []byte) {
		var ev Event
		if DecodeEvent(data, &ev, nil) != nil {
			return
		}
		// What decodes re-encodes to something that decodes the same.
		var again Event
		if err := DecodeEvent(AppendEvent(nil, &ev), &again, nil); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(ev, again) {
			t.Fatalf("unstable:\n%+v\n%+v", ev, again)
		}
		// Into an event whose map held another record's: the same.
		reused := Event{Attrs: map[string]string{"stale": "x", "a": "b"}}
		if err := DecodeEventReusing(data, &reused, nil); err != nil {
			t.Fatal(err)
		}
		if len(reused.Attrs) == 0 {
			reused.Attrs = nil
		}
		if !reflect.DeepEqual(ev, reused) {
			t.Fatalf("decoded into reused memory:\n%+v\n%+v", ev, reused)
		}
	})
}

func FuzzDecodeMatch(f *testing.F) {
	f.Add(AppendMatch(nil, sampleMatch()))
	f.Add(AppendMatch(nil, &Match{}))
	f.Fuzz(func(t *testing.T, data []byte) {
		var m Match
		if DecodeMatch(data, &m, nil) != nil {
			return
		}
		var again Match
		if err := DecodeMatch(AppendMatch(nil, &m), &again, nil); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(m, again) {
			t.Fatalf("unstable:\n%+v\n%+v", m, again)
		}
	})
}

func BenchmarkEventCodec(b *testing.B) {
	ev := sampleEvent()
	buf := AppendEvent(nil, ev)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	var out Event
	for b.Loop() {
		buf = AppendEvent(buf[:0], ev)
		if err := DecodeEvent(buf, &out, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// Addr parses whichever string it is given, remembering only the last:
// switching between an event's fields gives each its own address.
func TestAddr(t *testing.T) {
	ev := &Event{SrcIP: "10.0.0.1", DstIP: "2001:db8::1"}
	for _, tc := range []struct {
		s    string
		want string
		ok   bool
	}{
		{ev.SrcIP, "10.0.0.1", true}, {ev.SrcIP, "10.0.0.1", true}, {ev.DstIP, "2001:db8::1", true},
		{"not an address", "invalid IP", false}, {"", "invalid IP", false}, {ev.SrcIP, "10.0.0.1", true},
	} {
		a, ok := ev.Addr(tc.s)
		if ok != tc.ok || a.String() != tc.want {
			t.Errorf("Addr(%q) = %v, %v; want %s, %v", tc.s, a, ok, tc.want, tc.ok)
		}
	}
}

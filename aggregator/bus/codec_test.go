package bus

import (
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/outpost-siem/outpost/aggregator/event"
)

func TestPackAndDecode(t *testing.T) {
	var items []item
	for i := range 3 {
		data := event.AppendEvent(nil, &event.Event{ID: string(rune('a' + i)), Source: "syslog"})
		items = append(items, item{subject: "events.syslog", data: data})
	}
	items = append(items, item{msg: nats.NewMsg("deadletter.syslog")})
	data := event.AppendEvent(nil, &event.Event{ID: "z", Source: "azure.signin"})
	items = append(items, item{subject: "events.azure.signin", data: data})

	msgs := pack(items)
	if len(msgs) != 3 || msgs[0].events != 3 || msgs[1].msg.Subject != "deadletter.syslog" || msgs[2].events != 1 {
		t.Fatalf("pack = %+v", msgs)
	}
	var ids []string
	err := DecodeEvents(msgs[0].msg.Data, func(ev *event.Event) error { ids = append(ids, ev.ID); return nil },
		func([]byte, error) error { t.Error("bad line"); return nil })
	if err != nil || strings.Join(ids, "") != "abc" {
		t.Errorf("decoded %v, %v", ids, err)
	}
}

func TestPackRespectsMaxBatchBytes(t *testing.T) {
	big := make([]byte, MaxBatchBytes/3)
	for i := range big {
		big[i] = 'x'
	}
	items := []item{{subject: "events.s", data: big}, {subject: "events.s", data: big}, {subject: "events.s", data: big}, {subject: "events.s", data: big}}
	for _, m := range pack(items) {
		if len(m.msg.Data) > MaxBatchBytes {
			t.Errorf("message of %d bytes", len(m.msg.Data))
		}
	}
	if n := len(pack(items)); n != 2 {
		t.Errorf("%d messages, want 2", n)
	}
}

// A binary batch cut short delivers what precedes the damage and passes
// the rest to bad once.
func TestDecodeEventsTruncatedBatch(t *testing.T) {
	var batch []byte
	for _, id := range []string{"1", "2", "3"} {
		batch = AppendRecord(batch, event.AppendEvent(nil, &event.Event{ID: id, Source: "syslog"}))
	}
	var ids []string
	var bad int
	err := DecodeEvents(batch[:len(batch)-3], func(ev *event.Event) error { ids = append(ids, ev.ID); return nil },
		func([]byte, error) error { bad++; return nil })
	if err != nil || strings.Join(ids, ",") != "1,2" || bad != 1 {
		t.Errorf("ids %v bad %d err %v", ids, bad, err)
	}
}

func TestDecodeMatches(t *testing.T) {
	var batch []byte
	for _, k := range []string{"a", "b"} {
		batch = AppendRecord(batch, event.AppendMatch(nil, &event.Match{RuleID: "r", Key: k, Fields: map[string]string{"user": k + "-user"}}))
	}
	// A record that is not a match, between good ones.
	batch = AppendRecord(batch, []byte{0xff})
	batch = AppendRecord(batch, event.AppendMatch(nil, &event.Match{RuleID: "r", Key: "c"}))
	var keys []string
	var bad int
	err := DecodeMatches(batch, func(m *event.Match) error {
		keys = append(keys, m.Key)
		if m.Key != "c" && m.CarriedFields()["user"] != m.Key+"-user" {
			t.Errorf("match %s: fields %v", m.Key, m.CarriedFields())
		}
		return nil
	},
		func([]byte, error) error { bad++; return nil })
	if err != nil || strings.Join(keys, ",") != "a,b,c" || bad != 1 {
		t.Errorf("keys %v bad %d err %v", keys, bad, err)
	}
	// JSON lines, as versions before the binary encoding wrote MATCHES.
	keys = nil
	err = DecodeMatches([]byte(`{"rule":"r","key":"x"}`+"\n"+`{"rule":"r","key":"y"}`), func(m *event.Match) error { keys = append(keys, m.Key); return nil },
		func([]byte, error) error { bad++; return nil })
	if err != nil || strings.Join(keys, ",") != "x,y" {
		t.Errorf("JSON lines: keys %v err %v", keys, err)
	}
}

// JSON lines, as versions before the binary encoding wrote EVENTS.
func TestDecodeEventsKeepsGoingPastABadLine(t *testing.T) {
	data := []byte(`{"id":"1"}` + "\n" + `{"id":` + "\n" + `{"id":"3"}`)
	var ids []string
	var bad int
	err := DecodeEvents(data, func(ev *event.Event) error { ids = append(ids, ev.ID); return nil },
		func([]byte, error) error { bad++; return nil })
	if err != nil || strings.Join(ids, ",") != "1,3" || bad != 1 {
		t.Errorf("ids %v bad %d err %v", ids, bad, err)
	}
}

// Damaged JSON lines are bad records, never a crash. A key cut short
// after a backslash made github.com/goccy/go-json (used here before)
// read past the end of its buffer and panic, depending on what lay
// beyond it (goccy/go-json#604); many rounds, with small allocations
// next to the buffer, make that likely.
func TestDecodeDamagedJSONLines(t *testing.T) {
	lines := []string{`{"\`, `{"ti\`, `{"rule":"r","\`, `{"\u`, `{"id\`, `{"\29\`}
	var neighbours [][]byte
	for i := range 5000 {
		for _, line := range lines {
			neighbours = append(neighbours[:0], []byte(strings.Repeat("A", 8+i%9)))
			bad := 0
			count := func([]byte, error) error { bad++; return nil }
			if err := DecodeMatches([]byte(line), func(*event.Match) error { return nil }, count); err != nil || bad != 1 {
				t.Fatalf("match %q: bad %d err %v", line, bad, err)
			}
			if err := DecodeEvents([]byte(line), func(*event.Event) error { return nil }, count); err != nil || bad != 2 {
				t.Fatalf("event %q: bad %d err %v", line, bad, err)
			}
		}
	}
	_ = neighbours
}

// The event DecodeEvents hands out is reused, its attribute map too: each
// record still shows exactly its own attributes, none left from the one
// before, also after a record with more than the reused map may hold.
func TestDecodedEventsHaveTheirOwnAttributes(t *testing.T) {
	many := map[string]string{}
	for i := range 40 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	want := []map[string]string{
		{"a": "1", "b": "2"}, {"c": "3"}, nil, many, {"a": "4"}, {}, {"d": "5"},
	}
	var items []item
	for i, attrs := range want {
		items = append(items, item{subject: "events.syslog", data: event.AppendEvent(nil, &event.Event{ID: fmt.Sprint(i), Source: "syslog", Attrs: attrs})})
	}
	msgs := pack(items)
	if len(msgs) != 1 {
		t.Fatalf("pack made %d messages", len(msgs))
	}
	i := 0
	err := DecodeEvents(msgs[0].msg.Data, func(ev *event.Event) error {
		if !maps.Equal(ev.Attrs, want[i]) {
			t.Errorf("event %s: attributes %v, want %v", ev.ID, ev.Attrs, want[i])
		}
		i++
		return nil
	}, func([]byte, error) error { t.Error("bad record"); return nil })
	if err != nil || i != len(want) {
		t.Errorf("decoded %d events, %v", i, err)
	}
}

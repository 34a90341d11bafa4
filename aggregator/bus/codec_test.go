package bus

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/outpost-siem/outpost/aggregator/event"
)

func TestPackAndDecode(t *testing.T) {
	var items []item
	for i := range 3 {
		data, _ := json.Marshal(event.Event{ID: string(rune('a' + i)), Source: "syslog"})
		items = append(items, item{subject: "events.syslog", data: data})
	}
	items = append(items, item{msg: nats.NewMsg("deadletter.syslog")})
	data, _ := json.Marshal(event.Event{ID: "z", Source: "azure.signin"})
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

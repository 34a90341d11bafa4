package window

import (
	"context"
	"fmt"
	"testing"
	"testing/fstest"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/bus/bustest"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/state/statetest"
	"github.com/outpost-siem/outpost/rules"
)

// EVENTS deleted and made again (numbering from 1 again) while MATCHES
// still holds matches of the old one: the windows, restarted, take the
// old messages' Outpost-Source positions for positions of the new EVENTS
// (the header does not say which EVENTS it means), and skip the new
// stream's matches at those positions as held. docs/operations.md says
// positions are tied to the stream's creation time "so a stream deleted
// and made again is not mistaken for the old one".
func TestEventsMadeAgainIsNotMistakenForTheOld(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte("rules:" + thresholdRule + "\n")}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	run := &crashRun{t: t, db: statetest.Open(t), bus: bustest.Open(ctx, t), set: set, published: map[string]string{}}
	js := run.bus.JetStream()
	cons := matchesConsumer(ctx, t, js)
	pos := func(seq uint64) uint64 { p, _ := bus.SourcePosition(seq, 0); return p }
	publish := func(header string, ms ...*event.Match) []jetstream.Msg {
		t.Helper()
		msg := nats.NewMsg("matches.0")
		for _, m := range ms {
			msg.Data = bus.AppendRecord(msg.Data, event.AppendMatch(nil, m))
		}
		msg.Header.Set(bus.HeaderSource, header)
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
		return fetchFrom(t, cons, 1)
	}
	// A match of the old EVENTS (its messages 1 to 3: the rule filter's
	// account), still in MATCHES.
	old := publish(fmt.Sprintf("%d %d:1", pos(1), pos(3)-pos(1)), match("many", "b", "old", t0))
	// EVENTS is deleted and made again; the windows restart.
	st, err := js.Stream(ctx, bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if err := js.DeleteStream(ctx, bus.StreamEvents); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // another creation time
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	s, stop := run.stage(ctx, nil)
	defer stop()
	handleAll(ctx, t, s, old)
	// The new EVENTS' messages 1 to 3 give host a three matches: the
	// threshold fires.
	for i := range 3 {
		seq := uint64(i + 1)
		handleAll(ctx, t, s, publish(fmt.Sprintf("%d 0:1", pos(seq)), match("many", "a", fmt.Sprint("new", seq), t0.Add(time.Duration(i)*time.Second))))
	}
	if len(run.ids()) != 1 {
		t.Errorf("alerts %v, want 1 (three matches of host a in the new EVENTS; skipped as republished: %v)", run.published, testutil.ToFloat64(s.republished))
	}
}

package filter

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"testing/fstest"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/bus/bustest"
	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/ingest/syslog"
	"github.com/outpost-siem/outpost/rules"
)

// The attack the fault tests found, through the real stage on an embedded
// JetStream: one UDP datagram claiming host=victim01, stamped 4m50s ahead
// of its reception, then 20 genuine victim01 events. Every genuine event
// must be evaluated (a match each), none dead-lettered as late.
func TestForgedDatagramDoesNotBlindAHost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, set, logger := openVictimBus(ctx, t)

	parser := syslog.NewParser()
	received := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	parse := func(line string, at time.Time, sender string) *event.Event {
		ev := &event.Event{}
		if err := parser.Parse([]byte(line), at, sender, ev); err != nil {
			t.Fatal(err)
		}
		return ev
	}
	forged := parse("<13>1 2026-12-01T18:04:50Z victim01 sshd - - - forged", received, "127.0.0.66:40000")
	if err := b.PublishEvents(ctx, []*event.Event{forged}); err != nil {
		t.Fatal(err)
	}
	var genuine []*event.Event
	for i := range 20 {
		at := received.Add(time.Duration(i) * time.Second)
		genuine = append(genuine, parse(fmt.Sprintf("<13>1 %s victim01 sshd - - - genuine %d", at.Format(time.RFC3339), i), at, "127.0.0.10:514"))
	}
	if err := b.PublishEvents(ctx, genuine); err != nil {
		t.Fatal(err)
	}

	s, err := New(b, set, engine.Lateness{AllowedLateness: 2 * time.Minute}, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	stop := bustest.Run(ctx, t, s.Run)
	// EVENTS is a work queue: it is empty once the filter acked every batch,
	// which it does after its matches and dead letters were acked.
	bustest.WaitDrained(ctx, t, b, bus.StreamEvents)
	stop()

	late := 0
	bustest.ReadStream(ctx, t, b, bus.StreamDeadLetter, func(m *jetstream.RawStreamMsg) {
		if m.Subject == "deadletter.late" {
			late++
		}
	})
	matched := map[string]bool{}
	bustest.ReadStream(ctx, t, b, bus.StreamMatches, func(m *jetstream.RawStreamMsg) {
		err := bus.DecodeMatches(m.Data, func(m *event.Match) error {
			matched[m.EventID] = true
			return nil
		}, func(_ []byte, err error) error { return err })
		if err != nil {
			t.Fatal(err)
		}
	})
	missed := 0
	for _, ev := range genuine {
		if !matched[ev.ID] {
			missed++
		}
	}
	if late > 0 || missed > 0 {
		t.Errorf("after one forged datagram: %d of 20 genuine victim01 events dead-lettered as late, %d raised no match", late, missed)
	}
	if !matched[forged.ID] {
		t.Error("the forged event itself raised no match")
	}
}

// A late event stamped ahead of its reception was judged at its reception:
// its dead letter's reason says so, and does not call 2099 "behind".
func TestLateReasonGivesTheTimeJudged(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, set, logger := openVictimBus(ctx, t)
	now := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	stale := now.Add(-5 * time.Minute)
	if err := b.PublishEvents(ctx, []*event.Event{
		{ID: "now", Source: "syslog", Host: "victim01", Time: now, Received: now},
		{ID: "stale", Source: "syslog", Host: "victim01", Time: time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), Received: stale},
	}); err != nil {
		t.Fatal(err)
	}
	s, err := New(b, set, engine.Lateness{AllowedLateness: 2 * time.Minute}, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	stop := bustest.Run(ctx, t, s.Run)
	dl, err := b.JetStream().Stream(ctx, bus.StreamDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	var msg *jetstream.RawStreamMsg
	for msg == nil {
		msg, err = dl.GetLastMsgForSubject(ctx, "deadletter.late")
		if err != nil {
			select {
			case <-ctx.Done():
				t.Fatalf("no late dead letter: %v", err)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	stop()
	want := "late: received " + stale.Format(time.RFC3339) + " (stamped 2099-01-01T00:00:00Z, ahead of its reception) is more than 2m0s behind the newest syslog event from victim01"
	if r := msg.Header.Get("Outpost-Reason"); r != want {
		t.Errorf("reason\n %q, want\n %q", r, want)
	}
}

// openVictimBus opens an embedded JetStream for t and loads one match rule,
// victim-event (host == "victim01", grouped by host).
func openVictimBus(ctx context.Context, t *testing.T) (*bus.Bus, *rules.Set, *slog.Logger) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := bustest.Open(ctx, t)
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(`
rules:
  - {id: victim-event, title: T, kind: match, severity: 5, condition: 'host == "victim01"', group_by: [host]}
`)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	return b, set, logger
}

// The windows move their watermark by what the filter says it had seen
// (bus.HeaderWatermark): a batch's messages carry the newest event time
// admitted before the batch, its last message the newest after it. Two
// batches of events over many hosts (so many partitions), one after the
// other: the first batch's messages carry nothing but the last, which
// carries its newest; the second's carry the first's newest, but the last.
func TestMatchesCarryTheWatermark(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b := bustest.Open(ctx, t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(`
rules:
  - {id: any, title: T, kind: match, severity: 5, condition: 'host != ""', group_by: [host]}
`)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	batch := func(from int) ([]*event.Event, time.Time) {
		var evs []*event.Event
		var newest time.Time
		for i := range 40 {
			at := base.Add(time.Duration(from+i) * time.Second)
			evs = append(evs, &event.Event{ID: fmt.Sprint("e", from+i), Source: "syslog", Host: fmt.Sprint("h", i), Time: at, Received: at})
			newest = at
		}
		return evs, newest
	}
	s, err := New(b, set, engine.Lateness{AllowedLateness: 2 * time.Minute}, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	stop := bustest.Run(ctx, t, s.Run)
	defer stop()
	publish := func(evs []*event.Event) []string {
		if err := b.PublishEvents(ctx, evs); err != nil {
			t.Fatal(err)
		}
		bustest.WaitDrained(ctx, t, b, bus.StreamEvents)
		var hs []string
		bustest.ReadStream(ctx, t, b, bus.StreamMatches, func(m *jetstream.RawStreamMsg) {
			hs = append(hs, m.Header.Get(bus.HeaderWatermark))
		})
		return hs
	}
	check := func(name string, hs []string, before, after string) {
		t.Helper()
		if len(hs) < 2 {
			t.Fatalf("%s: %d MATCHES messages; the test wants a batch over several partitions", name, len(hs))
		}
		for i, h := range hs[:len(hs)-1] {
			if h != before {
				t.Errorf("%s, message %d: watermark %q, want %q (before the batch)", name, i, h, before)
			}
		}
		if got := hs[len(hs)-1]; got != after {
			t.Errorf("%s, last message: watermark %q, want %q (the batch's newest)", name, got, after)
		}
	}
	first, newest1 := batch(0)
	hs := publish(first)
	check("first batch", hs, "", fmt.Sprint(newest1.UnixNano()))
	second, newest2 := batch(100)
	check("second batch", publish(second)[len(hs):], fmt.Sprint(newest1.UnixNano()), fmt.Sprint(newest2.UnixNano()))

}

package filter

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/bus/bustest"
	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
)

// fetchAsFilter fetches n EVENTS messages through the rule filter's own
// durable consumer, as a run of the filter that is then killed would
// have been handed them.
func fetchAsFilter(ctx context.Context, t *testing.T, b *bus.Bus, n int) []jetstream.Msg {
	t.Helper()
	cons, err := b.JetStream().CreateOrUpdateConsumer(ctx, bus.StreamEvents, jetstream.ConsumerConfig{
		Durable: "outpost-filter", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
		MaxAckPending: 256 * 4, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	return fetchN(t, cons, n)
}

// fetchN fetches n messages from cons.
func fetchN(t *testing.T, cons jetstream.Consumer, n int) []jetstream.Msg {
	t.Helper()
	var msgs []jetstream.Msg
	for len(msgs) < n {
		fetched, err := cons.Fetch(n-len(msgs), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range fetched.Messages() {
			msgs = append(msgs, m)
		}
	}
	return msgs
}

// handOne hands s one EVENTS message and waits until its matches are
// durable, as ConsumeAsync does before it acks.
func handOne(ctx context.Context, t *testing.T, s *Stage, m jetstream.Msg) {
	t.Helper()
	wait, err := s.handle(ctx, []jetstream.Msg{m})
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
}

// publishAt publishes one EVENTS message per time, each an event of
// victim01 at that time.
func publishAt(ctx context.Context, t *testing.T, b *bus.Bus, times ...time.Time) {
	t.Helper()
	for i, at := range times {
		ev := &event.Event{ID: fmt.Sprint("ev", i), Source: "syslog", Host: "victim01", Time: at, Received: at, Message: "m"}
		if err := b.PublishEvents(ctx, []*event.Event{ev}); err != nil {
			t.Fatal(err)
		}
	}
}

// restartFilter runs s until EVENTS is drained, as the process started
// again after a kill.
func restartFilter(ctx context.Context, t *testing.T, b *bus.Bus, s *Stage) {
	t.Helper()
	stop := bustest.Run(ctx, t, s.Run)
	bustest.WaitDrained(ctx, t, b, bus.StreamEvents)
	stop()
}

// A rule filter killed after it acked an EVENTS message and before it
// acked the next is handed that next one again after the restart. The
// first run dead-lettered its event as late (10 minutes behind its host's
// newest, which the acked message held); the restarted run must judge it
// late too, or its match is applied where the uninterrupted run applied
// none (the kill test's extra alerts: cmd/outpost
// TestKill9ReplaysToTheSameAlerts). Before the gate's watermarks were
// kept, the restarted gate started empty and admitted it.
func TestRestartJudgesLateAsTheFirstRunDid(t *testing.T) {
	for _, fused := range []bool{false, true} {
		t.Run(fmt.Sprint("fused=", fused), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			b, set, logger := openVictimBus(ctx, t)
			at := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
			publishAt(ctx, t, b, at, at.Add(-10*time.Minute))
			msgs := fetchAsFilter(ctx, t, b, 2)
			lateness := engine.Lateness{AllowedLateness: 2 * time.Minute}
			first, err := New(b, set, lateness, logger, prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			if fused {
				first.Fuse(durableSink{})
			}
			first.startGateLog(ctx, "outpost-filter", 0) // as Run does, at the first start
			handOne(ctx, t, first, msgs[0])
			if err := msgs[0].DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
			handOne(ctx, t, first, msgs[1]) // late; killed before its ack
			if n := lateDeadLetters(ctx, t, b); n != 1 {
				t.Fatalf("the first run dead-lettered %d events as late, want 1", n)
			}
			reg := prometheus.NewRegistry()
			again, err := New(b, set, lateness, logger, reg)
			if err != nil {
				t.Fatal(err)
			}
			if fused {
				again.Fuse(durableSink{})
			}
			restartFilter(ctx, t, b, again)
			if m := counterValue(t, reg, "outpost_filter_matches_total"); m != 0 {
				t.Errorf("the restarted filter gave %v matches for the event the first run judged late", m)
			}
			if n := lateDeadLetters(ctx, t, b); n != 2 {
				t.Errorf("%d late dead letters after the restart, want 2 (the same event, judged late twice)", n)
			}
		})
	}
}

// durableSink takes every batch, durable at once.
type durableSink struct{}

func (durableSink) Consumer(cc bus.ConsumerConfig) bus.ConsumerConfig { return cc }

func (durableSink) Apply(context.Context, []event.Match, []bus.Source, int64, int) (func() error, error) {
	return nil, nil
}

// What the killed run's gate admitted in messages it never acked is not
// restored: those messages are handed again, and judged against what the
// acked ones admitted only. Here the first run was handed the second
// message (an event 10 minutes after the first's) and killed before
// acking either: restored with it, the gate would find the first
// message's event late, and its match lost.
func TestRestartForgetsWhatWasNotAcked(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, set, logger := openVictimBus(ctx, t)
	at := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	publishAt(ctx, t, b, at, at.Add(10*time.Minute))
	msgs := fetchAsFilter(ctx, t, b, 2)
	lateness := engine.Lateness{AllowedLateness: 2 * time.Minute}
	first, err := New(b, set, lateness, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	first.startGateLog(ctx, "outpost-filter", 0) // as Run does, at the first start
	handOne(ctx, t, first, msgs[1])              // its gate records are durable; no ack
	reg := prometheus.NewRegistry()
	again, err := New(b, set, lateness, logger, reg)
	if err != nil {
		t.Fatal(err)
	}
	restartFilter(ctx, t, b, again)
	if n := lateDeadLetters(ctx, t, b); n != 0 {
		t.Errorf("%d events dead-lettered as late after the restart, want none", n)
	}
	if m := counterValue(t, reg, "outpost_filter_matches_total"); m != 2 {
		t.Errorf("the restarted filter published %v matches, want 2", m)
	}
}

// subjectMessages is how many messages STATELOG holds on subject.
func subjectMessages(ctx context.Context, t *testing.T, b *bus.Bus, subject string) uint64 {
	t.Helper()
	st, err := b.JetStream().Stream(ctx, bus.StreamStateLog)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// gateWatermarks is every watermark of g, by "source/host", and Newest.
func gateWatermarks(g *engine.Gate) (map[string]int64, int64) {
	m := map[string]int64{}
	g.Watermarks(func(source, host string, newest int64) { m[source+"/"+host] = newest })
	return m, g.Newest()
}

// A rule filter handed 300 batches of 50 hosts' events, acking each,
// keeps its gate's log small (snapshots, and the records before them
// purged once acked past), and a restart holds the same watermarks as the
// gate that wrote them, reading one snapshot in the end.
func TestGateLogRestoresTheSameWatermarksAndStaysSmall(t *testing.T) {
	defer func(v int64) { gateSnapshotMin = v }(gateSnapshotMin)
	gateSnapshotMin = 4 << 10
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, set, logger := openAnyBus(ctx, t)
	const batches, hosts = 300, 50
	at := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	for i := range batches {
		var evs []*event.Event
		for j := range 20 {
			ts := at.Add(time.Duration(i*20+j)*time.Second - time.Duration(j%3)*time.Minute)
			evs = append(evs, &event.Event{ID: fmt.Sprint("e", i, "-", j), Source: "syslog", Host: fmt.Sprint("h", (i*7+j)%hosts), Time: ts, Received: ts, Message: "m"})
		}
		if err := b.PublishEvents(ctx, evs); err != nil {
			t.Fatal(err)
		}
	}
	msgs := fetchAsFilter(ctx, t, b, batches)
	lateness := engine.Lateness{AllowedLateness: 2 * time.Minute}
	first, err := New(b, set, lateness, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	first.startGateLog(ctx, "outpost-filter", 0)
	subject := gateSubjectPrefix + "outpost-filter"
	most := uint64(0)
	for _, m := range msgs {
		handOne(ctx, t, first, m)
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
		most = max(most, subjectMessages(ctx, t, b, subject))
	}
	t.Logf("the gate log held at most %d messages", most)
	if most > 30 {
		t.Errorf("the gate's log held up to %d messages over %d batches, want it kept to a few snapshots' worth", most, batches)
	}
	want, wantAll := gateWatermarks(first.gate)
	if len(want) != hosts {
		t.Fatalf("the first run's gate has %d watermarks, want %d", len(want), hosts)
	}
	again, err := New(b, set, lateness, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	md, err := msgs[len(msgs)-1].Metadata()
	if err != nil {
		t.Fatal(err)
	}
	again.startGateLog(ctx, "outpost-filter", md.Sequence.Stream) // every message acked
	got, gotAll := gateWatermarks(again.gate)
	if gotAll != wantAll || len(got) != len(want) {
		t.Fatalf("restored %d watermarks, newest %d; the first run had %d, newest %d", len(got), gotAll, len(want), wantAll)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s restored at %d, want %d", k, got[k], v)
		}
	}
	if n := subjectMessages(ctx, t, b, subject); n != 1 {
		t.Errorf("after the restart the gate's log holds %d messages, want its one snapshot", n)
	}
}

// gateRecords is what l holds of a batch's records, message by message.
func gateRecords(l *gateLog) [][]byte {
	out := append([][]byte(nil), l.msgs...)
	if len(l.buf) > 0 {
		out = append(out, l.buf)
	}
	return out
}

// The records of messages whose watermarks outgrow a message of the log
// (tens of thousands of hosts, as a flood of forged host names gives) are
// cut into several, and read back into the same watermarks, the clear of
// MaxHostWatermarks first; those tagged past the floor are not applied.
func TestGateRecordsReadBackTheSameWatermarks(t *testing.T) {
	lateness := engine.Lateness{AllowedLateness: time.Minute}
	g := engine.NewGate(lateness)
	g.Track()
	l := &gateLog{}
	at := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	host := func(i int) string { return fmt.Sprintf("forged-host-name-%08d.example.invalid", i) }
	for msg := range 6 { // six EVENTS messages of 30,000 new hosts each
		for i := range 30_000 {
			ts := at.Add(time.Duration(msg) * time.Minute)
			g.Admit(&event.Event{Source: "syslog", Host: host(msg*30_000 + i), Time: ts, Received: ts})
		}
		l.note(uint64(msg+1), g)
	}
	msgs := gateRecords(l)
	if len(msgs) < 6 {
		t.Fatalf("%d messages for 180,000 watermarks, want them cut at %d bytes", len(msgs), gateChunk)
	}
	for _, m := range msgs {
		if len(m) > 2*gateChunk {
			t.Fatalf("a message of %d bytes, want at most about %d", len(m), gateChunk)
		}
	}
	back := engine.NewGate(lateness)
	for _, m := range msgs {
		if _, err := applyGateRecords(back, m, 6); err != nil {
			t.Fatal(err)
		}
	}
	want, wantAll := gateWatermarks(g)
	got, gotAll := gateWatermarks(back)
	if len(got) != len(want) || gotAll != wantAll {
		t.Fatalf("read back %d watermarks (newest %d), want %d (%d)", len(got), gotAll, len(want), wantAll)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s read back at %d, want %d", k, got[k], v)
		}
	}
	// As of message 3: before the watermarks started over (at 100,000).
	early := engine.NewGate(lateness)
	for _, m := range msgs {
		if _, err := applyGateRecords(early, m, 3); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := gateWatermarks(early); len(got) != 90_000 {
		t.Errorf("as of message 3, %d watermarks, want 90,000", len(got))
	}
}

// FuzzGateRecords: whatever a message of the gate's log holds, reading it
// neither panics nor allocates past its size.
func FuzzGateRecords(f *testing.F) {
	g := engine.NewGate(engine.Lateness{AllowedLateness: time.Minute})
	g.Track()
	l := &gateLog{}
	at := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	for i := range 3 {
		ts := at.Add(time.Duration(i) * time.Second)
		g.Admit(&event.Event{Source: "syslog", Host: fmt.Sprint("h", i), Time: ts, Received: ts})
		l.note(uint64(i+1), g)
	}
	f.Add(l.buf, uint64(2))
	f.Add([]byte{}, uint64(0))
	f.Add([]byte{1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}, uint64(1))
	f.Fuzz(func(t *testing.T, data []byte, floor uint64) {
		back := engine.NewGate(engine.Lateness{AllowedLateness: time.Minute})
		applied, _ := applyGateRecords(back, data, floor)
		if applied > len(data) {
			t.Fatalf("%d records applied from %d bytes", applied, len(data))
		}
	})
}

// A start whose consumer was not rewound to its ack floor (the messages
// not acked come after their ack wait, out of order) neither restores nor
// keeps the gate, and purges the log: a later restart must not restore
// the earlier run's watermarks for a run that judged with an empty gate.
func TestGateLogDroppedWhenNotRewound(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, set, logger := openVictimBus(ctx, t)
	at := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	publishAt(ctx, t, b, at)
	msgs := fetchAsFilter(ctx, t, b, 1)
	lateness := engine.Lateness{AllowedLateness: 2 * time.Minute}
	first, err := New(b, set, lateness, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	first.start(ctx, "outpost-filter", 0, true)
	handOne(ctx, t, first, msgs[0])
	if err := msgs[0].DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	subject := gateSubjectPrefix + "outpost-filter"
	if n := subjectMessages(ctx, t, b, subject); n == 0 {
		t.Fatal("the first run recorded nothing")
	}
	again, err := New(b, set, lateness, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	again.start(ctx, "outpost-filter", 1, false)
	if again.glog != nil {
		t.Error("the gate is kept though the consumer was not rewound")
	}
	if got, _ := gateWatermarks(again.gate); len(got) != 0 {
		t.Errorf("restored %v though the consumer was not rewound", got)
	}
	if n := subjectMessages(ctx, t, b, subject); n != 0 {
		t.Errorf("the gate's log still holds %d messages", n)
	}
}

// A message handed again out of order (its ack wait passed while the
// filter ran on) is admitted after newer ones: its record carries what
// they moved (the newest event time of any host, which the windows'
// watermark follows), and is tagged with the newest, so a restart whose
// floor is the older message does not restore it. Before, it was tagged
// with its own sequence, and the restart restored the newest time of a
// message never acked.
func TestGateRecordOfAMessageOutOfOrderWaitsForTheNewer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, set, logger := openVictimBus(ctx, t)
	at := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	for _, ev := range []*event.Event{
		{ID: "old", Source: "syslog", Host: "other", Time: at, Received: at, Message: "m"},
		{ID: "new", Source: "syslog", Host: "victim01", Time: at.Add(10 * time.Minute), Received: at.Add(10 * time.Minute), Message: "m"},
	} {
		if err := b.PublishEvents(ctx, []*event.Event{ev}); err != nil {
			t.Fatal(err)
		}
	}
	msgs := fetchAsFilter(ctx, t, b, 2)
	lateness := engine.Lateness{AllowedLateness: 2 * time.Minute}
	first, err := New(b, set, lateness, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	first.start(ctx, "outpost-filter", 0, true)
	handOne(ctx, t, first, msgs[1])
	handOne(ctx, t, first, msgs[0]) // out of order
	if err := msgs[0].DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	again, err := New(b, set, lateness, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	again.start(ctx, "outpost-filter", 1, true) // message 1 acked, 2 not
	got, newest := gateWatermarks(again.gate)
	if newest > at.UnixNano() || got["syslog/victim01"] != 0 {
		t.Errorf("restored newest %s, watermarks %v: from message 2, which was never acked", time.Unix(0, newest).UTC(), got)
	}
}

package filter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
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

	late := lateDeadLetters(ctx, t, b)
	matched := map[string]bool{}
	compressed := 0
	bustest.ReadStream(ctx, t, b, bus.StreamMatches, func(m *jetstream.RawStreamMsg) {
		if m.Data[0] == 0xB2 { // bus.Compress's batch
			compressed++
		}
		err := bus.DecodeMatches(m.Data, func(m *event.Match) error {
			matched[m.EventID] = true
			return nil
		}, func(_ []byte, err error) error { return err })
		if err != nil {
			t.Fatal(err)
		}
	})
	if compressed == 0 {
		t.Error("no MATCHES message was compressed")
	}
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

// openAnyBus is openVictimBus with one rule, a match of any host.
func openAnyBus(ctx context.Context, t *testing.T) (*bus.Bus, *rules.Set, *slog.Logger) {
	t.Helper()
	b := bustest.Open(ctx, t)
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(`
rules:
  - {id: any, title: T, kind: match, severity: 5, condition: 'host != ""', group_by: [host]}
`)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	return b, set, slog.New(slog.NewTextHandler(io.Discard, nil))
}

// The windows move their watermark by what the filter says it had seen
// (bus.HeaderWatermark): a batch's messages carry the newest event time
// admitted before the batch, its last message the newest after it. Two
// batches of events over many hosts (so many partitions), one after the
// other: the first batch's messages carry "0" (no event admitted yet: the
// windows must not move by their matches' times) but the last, which
// carries its newest; the second's carry the first's newest, but the last.
func TestMatchesCarryTheWatermark(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, set, logger := openAnyBus(ctx, t)
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
	check("first batch", hs, "0", fmt.Sprint(newest1.UnixNano()))
	second, newest2 := batch(100)
	check("second batch", publish(second)[len(hs):], fmt.Sprint(newest1.UnixNano()), fmt.Sprint(newest2.UnixNano()))

}

// failOnceSink is a fused sink that takes one message per batch, holds up
// to four batches in flight, fails the wait of its first batch once, and
// records the matches it is handed.
type failOnceSink struct {
	// inApply fails the first Apply itself instead of its wait.
	inApply bool
	mu      sync.Mutex
	calls   int
	matches []string // event ids, as handed
	// at is, by event id, the EVENTS positions its matches were handed at.
	at map[string][]uint64
}

func (k *failOnceSink) Consumer(cc bus.ConsumerConfig) bus.ConsumerConfig {
	cc.Batch, cc.InFlight = 1, 4
	return cc
}

func (k *failOnceSink) Apply(_ context.Context, ms []event.Match, src []bus.Source, _ int64, _ int) (func() error, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls++
	first := k.calls == 1
	if first && k.inApply {
		return nil, errors.New("the sink refused the batch")
	}
	for _, m := range ms {
		k.matches = append(k.matches, m.EventID)
	}
	if k.at == nil {
		k.at = map[string][]uint64{}
	}
	i := 0
	for _, s := range src {
		for _, r := range s.Runs {
			for _, m := range ms[i : i+r.N] {
				k.at[m.EventID] = append(k.at[m.EventID], r.Pos)
			}
			i += r.N
		}
	}
	return func() error {
		if first {
			time.Sleep(200 * time.Millisecond) // the batches after it are evaluated meanwhile
			return errors.New("checkpoint failed")
		}
		return nil
	}, nil
}

// A batch handed again after a failure is evaluated again by a gate that
// already admitted the batches after it: an event older than those by
// more than the allowed lateness is then dead-lettered as late, and its
// match lost, though it was on time the first time.
func TestBatchHandedAgainIsNotJudgedLate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, set, logger := openVictimBus(ctx, t)
	at := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	for i := range 3 { // one host, 10 minutes apart: one message each
		ts := at.Add(time.Duration(i) * 10 * time.Minute)
		ev := &event.Event{ID: fmt.Sprint("ev", i), Source: "syslog", Host: "victim01", Time: ts, Received: ts, Message: "m"}
		if err := b.PublishEvents(ctx, []*event.Event{ev}); err != nil {
			t.Fatal(err)
		}
	}
	sink := &failOnceSink{}
	late := drainFused(ctx, t, b, set, logger, sink)
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if late > 0 || !slices.Contains(sink.matches[1:], "ev0") {
		t.Errorf("%d events dead-lettered as late; matches handed %v: ev0's batch, handed again, lost its match", late, sink.matches)
	}
	// Handed again, each match comes with the EVENTS position it had.
	for id, at := range sink.at {
		if len(at) < 2 || slices.Min(at) != slices.Max(at) || at[0] == 0 {
			t.Errorf("%s handed at EVENTS positions %v, want one position each time (and twice)", id, at)
		}
	}
	if len(sink.at) != 3 {
		t.Errorf("positions for %d events, want 3", len(sink.at))
	}
}

// A batch that fails while it is evaluated (the sink refuses it) is
// handed again: its own events, admitted before the failure, must not make
// its older ones late on the retry.
func TestBatchFailedInHandIsNotJudgedLate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, set, logger := openVictimBus(ctx, t)
	at := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	var evs []*event.Event
	for i := range 3 { // one host, 10 minutes apart, in one message
		ts := at.Add(time.Duration(i) * 10 * time.Minute)
		evs = append(evs, &event.Event{ID: fmt.Sprint("ev", i), Source: "syslog", Host: "victim01", Time: ts, Received: ts, Message: "m"})
	}
	if err := b.PublishEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	sink := &failOnceSink{inApply: true}
	late := drainFused(ctx, t, b, set, logger, sink)
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if late > 0 || !slices.Equal(sink.matches, []string{"ev0", "ev1", "ev2"}) {
		t.Errorf("%d events dead-lettered as late; matches handed %v, want ev0 ev1 ev2 once (the refused batch's are not kept)", late, sink.matches)
	}
}

// drainFused runs a rule filter (2 minutes of lateness) fused with sink
// until EVENTS is drained, and returns how many events it dead-lettered
// as late.
func drainFused(ctx context.Context, t *testing.T, b *bus.Bus, set *rules.Set, logger *slog.Logger, sink Sink) int {
	t.Helper()
	s, err := New(b, set, engine.Lateness{AllowedLateness: 2 * time.Minute}, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s.Fuse(sink)
	stop := bustest.Run(ctx, t, s.Run)
	bustest.WaitDrained(ctx, t, b, bus.StreamEvents)
	stop()
	return lateDeadLetters(ctx, t, b)
}

// lateDeadLetters counts the events the filter dead-lettered as late.
func lateDeadLetters(ctx context.Context, t *testing.T, b *bus.Bus) int {
	t.Helper()
	late := 0
	bustest.ReadStream(ctx, t, b, bus.StreamDeadLetter, func(m *jetstream.RawStreamMsg) {
		if m.Subject == "deadletter.late" {
			late++
		}
	})
	return late
}

// EVENTS messages handed again (the rule filter was killed before it
// acked them, or a batch failed) give each partition MATCHES messages at
// the positions they gave it the first time (bus.HeaderSource), whether
// the same stage or a restarted one evaluates them, and however they are
// batched; and a partition's messages account for the positions between
// them without overlapping.
func TestMatchesHandedAgainKeepTheirSourcePositions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, set, logger := openAnyBus(ctx, t)
	base := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	for m := range 3 { // three EVENTS messages over 40 hosts each
		var evs []*event.Event
		for i := range 40 {
			at := base.Add(time.Duration(m*20+i) * time.Second) // within the lateness: admitted again
			evs = append(evs, &event.Event{ID: fmt.Sprint("e", m, "-", i), Source: "syslog", Host: fmt.Sprint("h", i*(m+1)), Time: at, Received: at})
		}
		if err := b.PublishEvents(ctx, evs); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := b.JetStream().CreateConsumer(ctx, bus.StreamEvents, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	fetched, err := cons.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range fetched.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != 3 {
		t.Fatalf("fetched %d EVENTS messages, want 3", len(msgs))
	}
	read := 0
	// evaluate hands s the batches and returns the MATCHES messages they
	// gave: subject and HeaderSource.
	evaluate := func(s *Stage, batches ...[]jetstream.Msg) [][2]string {
		for _, batch := range batches {
			wait, err := s.handle(ctx, batch)
			if err != nil {
				t.Fatal(err)
			}
			if err := wait(); err != nil {
				t.Fatal(err)
			}
		}
		var got [][2]string
		i := 0
		bustest.ReadStream(ctx, t, b, bus.StreamMatches, func(m *jetstream.RawStreamMsg) {
			if i++; i > read {
				got = append(got, [2]string{m.Subject, m.Header.Get(bus.HeaderSource)})
			}
		})
		read = i
		return got
	}
	newStage := func() *Stage {
		s, err := New(b, set, engine.Lateness{AllowedLateness: 2 * time.Minute}, logger, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// runs reads a message's HeaderSource: where its account starts and
	// its runs as "POS:N", POS absolute.
	runs := func(m [2]string) (from uint64, rs []string) {
		f, rest, _ := strings.Cut(m[1], " ")
		from, err := strconv.ParseUint(f, 10, 64)
		if err != nil || rest == "" {
			t.Fatalf("%s: source %q does not read", m[0], m[1])
		}
		pos := from
		for item := range strings.FieldsSeq(rest) {
			d, n, _ := strings.Cut(item, ":")
			delta, err := strconv.ParseUint(d, 10, 64)
			if err != nil {
				t.Fatalf("%s: source %q does not read", m[0], m[1])
			}
			pos += delta
			rs = append(rs, fmt.Sprint(pos, ":", n))
		}
		return from, rs
	}
	// positions is subject → the runs of its messages.
	positions := func(ms [][2]string) map[string][]string {
		out := map[string][]string{}
		for _, m := range ms {
			_, rs := runs(m)
			out[m[0]] = append(out[m[0]], rs...)
		}
		for _, ps := range out {
			slices.Sort(ps)
		}
		return out
	}
	s := newStage()
	first := evaluate(s, msgs)
	// Each partition's messages account for adjacent positions: each
	// starts right after the last run of the one before.
	next := map[string]uint64{}
	for _, m := range first {
		from, rs := runs(m)
		if n, ok := next[m[0]]; ok && from != n {
			t.Errorf("%s: message %q accounts from %d, want %d (right after the one before)", m[0], m[1], from, n)
		}
		var last uint64
		fmt.Sscanf(rs[len(rs)-1], "%d:", &last)
		next[m[0]] = last + 1
	}
	want := positions(first)
	if len(want) < 2 {
		t.Fatalf("the batch gave %d partitions; the test wants several", len(want))
	}
	if got := positions(evaluate(s, msgs)); !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("handed again to the same stage: positions %v, want %v", got, want)
	}
	if got := positions(evaluate(s, msgs[1:], msgs[:1])); !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("handed again to the same stage: positions %v, want %v", got, want)
	}
	if got := positions(evaluate(newStage(), msgs[:1], msgs[1:])); !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("handed again to a restarted stage, batched otherwise: positions %v, want %v", got, want)
	}
}

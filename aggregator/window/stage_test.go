package window

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/bus/bustest"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/state/statetest"
	"github.com/outpost-siem/outpost/rules"
)

// fakeClock is a wall clock a test moves by hand, safe to read from the
// stage's goroutines.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// Once no match has come for idle_advance, the watermark catches up with
// the wall clock minus the allowed lateness: an absence deadline in a
// backlog read long after the fact fires then, not `for` + idle_advance +
// lateness after the backlog's last event. Through the real stage, on an
// embedded JetStream and Badger, with an injected clock; the alert also
// carries the rule's fields (item 17, in the live stage).
func TestIdleWatermarkCatchesUpWithTheWallClock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wall := time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC)
	b, s, clock := newAbsenceStage(ctx, t, wall)
	cfg := s.cfg

	// A backlog: web-01's last event two hours ago, read now.
	last := wall.Add(-2 * time.Hour)
	m := &event.Match{RuleID: "silent", Key: "host=web-01", Time: last, Seen: last, EventID: "e1", Fields: map[string]string{"host": "web-01"}}
	if _, err := b.JetStream().Publish(ctx, "matches.0", bus.AppendRecord(nil, event.AppendMatch(nil, m))); err != nil {
		t.Fatal(err)
	}
	defer bustest.Run(ctx, t, s.Run)()
	waitFor(ctx, t, "the match applied", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.wm.Max() == last.UnixNano() && s.writing == nil && s.cur.batches == 0
	})

	// Idle, but not yet for idle_advance: nothing fires (the deadline,
	// last + 30m, is still ahead of last - 2m).
	clock.advance(cfg.IdleAdvance - time.Second)
	time.Sleep(1500 * time.Millisecond) // the timers check every second
	if n := alertCount(ctx, t, b); n != 0 {
		t.Fatalf("%d alerts before idle_advance passed", n)
	}
	s.mu.Lock()
	wm := s.Watermark()
	s.mu.Unlock()
	if want := last.Add(-cfg.AllowedLateness).UnixNano(); wm != want {
		t.Errorf("watermark before idle_advance %s, want %s", time.Unix(0, wm).UTC(), time.Unix(0, want).UTC())
	}

	clock.advance(2 * time.Second)
	s.mu.Lock()
	wm = s.Watermark()
	s.mu.Unlock()
	if want := clock.now().Add(-cfg.AllowedLateness).UnixNano(); wm != want {
		t.Errorf("watermark after idle_advance %s, want the wall clock minus lateness, %s", time.Unix(0, wm).UTC(), time.Unix(0, want).UTC())
	}
	waitFor(ctx, t, "the silence alert", func() bool { return alertCount(ctx, t, b) > 0 })
	a := firstAlert(ctx, t, b)
	if a.Key != "host=web-01" || a.Fields["host"] != "web-01" || !a.FirstSeen.Equal(last) {
		t.Errorf("alert %+v, want web-01's silence since %s with fields.host", a, last)
	}
}

// newAbsenceStage opens an embedded JetStream and a Badger dir for t and
// returns a stage with one absence rule, "silent" (host silent for 30m,
// grouped by and carrying host), default config, and a clock set to start.
func newAbsenceStage(ctx context.Context, t *testing.T, start time.Time) (*bus.Bus, *Stage, *fakeClock) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := bustest.Open(ctx, t)
	db := statetest.Open(t)
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(`
rules:
  - {id: silent, title: T, kind: absence, severity: 5, condition: 'host != ""', group_by: [host], for: 30m, fields: [host]}
`)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	var cfg Config
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{}
	clock.set(start)
	s, err := New(cfg, b, db, set, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s.now = clock.now
	return b, s, clock
}

// firstAlert decodes the first message on the alerts stream.
func firstAlert(ctx context.Context, t *testing.T, b *bus.Bus) event.Alert {
	t.Helper()
	st, err := b.JetStream().Stream(ctx, bus.StreamAlerts)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	var a event.Alert
	if err := json.Unmarshal(raw.Data, &a); err != nil {
		t.Fatal(err)
	}
	return a
}

func alertCount(ctx context.Context, t *testing.T, b *bus.Bus) uint64 {
	t.Helper()
	st, err := b.JetStream().Stream(ctx, bus.StreamAlerts)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// waitFor polls cond until it holds, for at most 5 seconds.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// The live stage, on an embedded JetStream and Badger: victim01's last
// genuine match, then one match claiming victim01 stamped 2099 (received a
// second later), then silence. The silence alert must fire once the
// watermark passes 30m after that reception — not never, and not at once.
func TestForgedFutureMatchDoesNotSilenceAbsence(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	last := time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC)
	received := last.Add(time.Second) // the forged datagram's reception
	b, s, clock := newAbsenceStage(ctx, t, received)
	cfg := s.cfg

	fields := map[string]string{"host": "victim01"}
	var data []byte
	for _, m := range []*event.Match{
		{RuleID: "silent", Key: "host=victim01", Time: last, Seen: last, EventID: "genuine", Fields: fields},
		{RuleID: "silent", Key: "host=victim01", Time: time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), Seen: received, EventID: "forged", Fields: fields},
	} {
		data = bus.AppendRecord(data, event.AppendMatch(nil, m))
	}
	if _, err := b.JetStream().Publish(ctx, "matches.0", data); err != nil {
		t.Fatal(err)
	}
	defer bustest.Run(ctx, t, s.Run)()
	waitFor(ctx, t, "the matches applied", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.wm.Max() == received.UnixNano() && s.writing == nil && s.cur.batches == 0
	})

	// Idle since: the watermark is the wall clock minus the lateness. At
	// exactly the deadline (reception + 30m) nothing may fire.
	deadline := received.Add(30 * time.Minute)
	clock.set(deadline.Add(cfg.AllowedLateness))
	time.Sleep(1500 * time.Millisecond) // the timers check every second
	if n := alertCount(ctx, t, b); n != 0 {
		t.Errorf("%d alerts before the deadline passed", n)
	}
	clock.advance(2 * time.Second)
	ctxWait, cancelWait := context.WithTimeout(ctx, 3*time.Second)
	defer cancelWait()
	for alertCount(ctx, t, b) == 0 {
		select {
		case <-ctxWait.Done():
			t.Fatalf("no silence alert for victim01 with the watermark %s past its last reception (+30m)", time.Unix(0, s.watermarkLocked()).UTC().Sub(deadline))
		case <-time.After(20 * time.Millisecond):
		}
	}
	a := firstAlert(ctx, t, b)
	if a.Key != "host=victim01" || a.Fields["host"] != "victim01" || !a.FirstSeen.Equal(received) {
		t.Errorf("alert %s since %s, want victim01's silence since %s", a.Key, a.FirstSeen.Format(time.RFC3339), received.Format(time.RFC3339))
	}
	if n := alertCount(ctx, t, b); n != 1 {
		t.Errorf("%d alerts, want 1", n)
	}
}

func (s *Stage) watermarkLocked() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Watermark()
}

// The watermark header (bus.HeaderWatermark) moves the windows' watermark
// by what the filter had admitted; a header that is not a number counts as
// none (the message's matches move it, as from an older version). Three
// messages: one whose header says later than its match, one with a
// garbled header, one with none.
func TestWatermarkHeader(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wall := time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC)
	b, s, _ := newAbsenceStage(ctx, t, wall)
	at := wall.Add(-time.Hour)
	publish := func(m *event.Match, header string) {
		t.Helper()
		msg := nats.NewMsg("matches.0")
		msg.Data = bus.AppendRecord(nil, event.AppendMatch(nil, m))
		if header != "" {
			msg.Header.Set(bus.HeaderWatermark, header)
		}
		if _, err := b.JetStream().PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	web01 := func(id string, when time.Time) *event.Match {
		return &event.Match{RuleID: "silent", Key: "host=web-01", Time: when, Seen: when, EventID: id}
	}
	defer bustest.Run(ctx, t, s.Run)()
	wait := func(what string, want time.Time) {
		t.Helper()
		waitFor(ctx, t, what, func() bool {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.wm.Max() == want.UnixNano() && s.writing == nil && s.cur.batches == 0
		})
	}
	// The filter had admitted an event 5 minutes newer than this match.
	publish(web01("e1", at), fmt.Sprint(at.Add(5*time.Minute).UnixNano()))
	wait("the header's time", at.Add(5*time.Minute))
	// Garbled: the match's own time counts, and it is older: no move.
	publish(web01("e2", at.Add(time.Minute)), "soon")
	publish(web01("e3", at.Add(10*time.Minute)), "")
	wait("the header-less match's time", at.Add(10*time.Minute))
}

// The race the watermark header closes. One batch of events holds, in
// this order, host a at +20m and host b at +2h; MATCHES carries b's
// message first (partitions reorder a batch) and the windows apply it in
// a batch of its own, then check their deadlines. Moved by b's match, the
// watermark would pass a's deadline (+30m) before a's +20m match arrives:
// a false silence since +0. With the filter's headers — the newest event
// time before the batch on b's message, after it on the batch's last —
// nothing fires in between, and once both are in, a's true silence since
// +20m does. (Without the headers the same messages raise the false one.)
func TestReorderedBatchDoesNotFireEarly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wall := time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC)
	b, s, _ := newAbsenceStage(ctx, t, wall)
	t0 := wall.Add(-6 * time.Hour)
	publish := func(subject string, m *event.Match, header time.Time) {
		t.Helper()
		msg := nats.NewMsg(subject)
		msg.Data = bus.AppendRecord(nil, event.AppendMatch(nil, m))
		msg.Header.Set(bus.HeaderWatermark, fmt.Sprint(header.UnixNano()))
		if _, err := b.JetStream().PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	host := func(h, id string, at time.Time) *event.Match {
		return &event.Match{RuleID: "silent", Key: "host=" + h, Time: at, Seen: at, EventID: id, Fields: map[string]string{"host": h}}
	}
	applied := func(what string, newest time.Time) {
		t.Helper()
		bustest.WaitDrained(ctx, t, b, bus.StreamMatches) // acked: applied and committed
		waitFor(ctx, t, what, func() bool {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.wm.Max() == newest.UnixNano() && s.writing == nil && s.cur.batches == 0
		})
		if err := s.CheckDeadlines(ctx); err != nil {
			t.Fatal(err)
		}
	}
	defer bustest.Run(ctx, t, s.Run)()
	publish("matches.0", host("a", "a0", t0), t0) // an earlier batch: a at +0
	applied("a's first match", t0)
	publish("matches.0", host("b", "b1", t0.Add(2*time.Hour)), t0) // before the batch: +0
	applied("b's match", t0)
	if n := alertCount(ctx, t, b); n != 0 {
		t.Fatalf("%d alerts with a's +20m match still to come", n)
	}
	publish("matches.1", host("a", "a1", t0.Add(20*time.Minute)), t0.Add(2*time.Hour)) // the batch's last
	applied("a's second match", t0.Add(2*time.Hour))
	if n := alertCount(ctx, t, b); n != 1 {
		t.Fatalf("%d alerts, want a's silence since +20m", n)
	}
	if a := firstAlert(ctx, t, b); a.Key != "host=a" || !a.FirstSeen.Equal(t0.Add(20*time.Minute)) {
		t.Errorf("alert %s since %s, want host=a since %s", a.Key, a.FirstSeen, t0.Add(20*time.Minute))
	}
}

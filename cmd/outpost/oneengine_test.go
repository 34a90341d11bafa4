package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"encoding/json"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/bus/bustest"
	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/filter"
	"github.com/outpost-siem/outpost/aggregator/ingest/syslog"
	"github.com/outpost-siem/outpost/aggregator/state/statetest"
	"github.com/outpost-siem/outpost/aggregator/window"
	"github.com/outpost-siem/outpost/rules"
	"github.com/outpost-siem/outpost/rules/ruletest"
)

// TestOneEngine is what keeps the three drivers of the correlation engine
// one engine: the live pipeline (the rule filter and windows stages on an
// embedded JetStream, window state in Badger, alerts read back from
// ALERTS), `rules test` (ruletest.Alerts) and `rules replay` (replayLog)
// must raise the same alerts — ids, keys, counts, times, evidence, fields —
// for the same input:
//
//   - every test case of the shipped pack, its events replayed as JSON
//     events (--input-format events);
//   - seeded random syslog streams over rules of every kind: sshd logons
//     from a few addresses and hosts, ties, events out of order within
//     the allowed lateness, events too late (dead-lettered by the gate),
//     silences longer than an absence rule's `for`, and backup jobs that
//     start and (sometimes) finish.
//
// At the end of the input each driver moves the watermark on by the same
// `advance`: rules test and replay by their option, the live windows by
// their idle advance on an injected clock set to the newest match time
// plus advance.
func TestOneEngine(t *testing.T) {
	pack, err := rules.Pack()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("pack", func(t *testing.T) {
		for _, tc := range pack.Tests {
			t.Run(tc.Name, func(t *testing.T) {
				t.Parallel()
				compareDrivers(t, pack.Only(tc.Rules), tc.Events, nil, tc.Advance)
			})
		}
	})
	set, err := rules.LoadFS(fstest.MapFS{"kinds.yaml": {Data: []byte(everyKind)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	seeds := 12
	if testing.Short() {
		seeds = 3
	}
	var fired sync.Map // rule id -> true, over every seed
	t.Run("random", func(t *testing.T) {
		for seed := range seeds {
			t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
				t.Parallel()
				lines, events := randomStream(t, uint64(seed), 150+seed*40)
				for _, a := range compareDrivers(t, set, events, lines, time.Hour) {
					fired.Store(a.RuleID, true)
				}
			})
		}
	})
	// The streams must exercise every kind, or the comparison proves little.
	for _, r := range set.Rules {
		if _, ok := fired.Load(r.ID); !ok {
			t.Errorf("no random stream made %s (%s) fire", r.ID, r.Kind)
		}
	}
}

// TestOneEngineManyKeys holds the live pipeline (fused) to the other
// drivers on a stream of 10^5 source addresses (a distributed brute force)
// with a cache of 5,000 states and checkpoints every 100ms: nearly every
// state is evicted, checkpointed and read back from Badger between its
// matches.
func TestOneEngineManyKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("10^5 keys through the live pipeline")
	}
	set, err := rules.LoadFS(fstest.MapFS{"kinds.yaml": {Data: []byte(everyKind)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	lines, events := manyKeysStream(t, 1, 100_000)
	alerts := compareDriversWith(t, set, events, lines, time.Hour, func(c *window.Config) {
		c.CacheKeys, c.CheckpointKeys = 5000, 5000
		c.CheckpointInterval = 100 * time.Millisecond
		c.Fused = new(true) // TestOneEngine runs the small streams both ways
	})
	byRule := map[string]int{}
	for _, a := range alerts {
		byRule[a.RuleID]++
	}
	t.Logf("%d lines from 10^5 addresses: %d alerts %v", len(events), len(alerts), byRule)
	for _, id := range []string{"brute", "spray", "brute-then-in", "any-accept"} {
		if byRule[id] == 0 {
			t.Errorf("no alert of %s: the stream proves little", id)
		}
	}
}

// TestUnorderedSequenceOnAHotKey: on a key with an event every second or
// two (5 users over the many-keys stream), two windows of the unordered
// sequence could begin in the same second and got one alert id; the live
// pipeline publishes the id as Nats-Msg-Id and JetStream dropped the
// second as a duplicate (3 of 760 alerts here, 72 of 15,212 with 10^5
// addresses). Such a window's id now also holds its first event's
// (aggregator/engine TestWindowsBeginningInOneSecondHaveTwoIDs).
func TestUnorderedSequenceOnAHotKey(t *testing.T) {
	set, err := rules.LoadFS(fstest.MapFS{"kinds.yaml": {Data: []byte(everyKind)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	lines, events := manyKeysStream(t, 1, 5000)
	compareDrivers(t, set.Only([]string{"in-and-fail"}), events, lines, time.Hour)
}

// manyKeysStream writes a seeded stream of sshd logons from keys distinct
// IPv6 documentation addresses, each at least once, in shuffled order,
// with one line in five from one of 40 busy addresses (the ones that
// alert); event time moves on by up to 2s a line.
func manyKeysStream(t *testing.T, seed uint64, keys int) ([]byte, []*event.Event) {
	rng := rand.New(rand.NewPCG(seed, 0x6e75))
	order := rng.Perm(keys)
	users := []string{"root", "admin", "alice", "oracle", "deploy"}
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	for i := 0; i < len(order); {
		addr := 0
		if rng.IntN(5) == 0 {
			addr = rng.IntN(40)
		} else {
			addr, i = order[i], i+1
		}
		ip := fmt.Sprintf("2001:db8::%x:%x", addr>>16, addr&0xffff)
		user := users[rng.IntN(len(users))]
		verb := "Failed"
		if rng.IntN(8) == 0 {
			verb = "Accepted"
		}
		fmt.Fprintf(&buf, "<38>1 %s web-%02d sshd - - - %s password for %s from %s port 50022 ssh2\n", now.Format(time.RFC3339), addr%7, verb, user, ip)
		now = now.Add(time.Duration(rng.IntN(3)) * time.Second / 2)
	}
	lines := buf.Bytes()
	return lines, parseAsReplay(t, lines)
}

// everyKind is a rule of each kind over the syslog source's sshd fields
// and plain messages, with suppression where a kind has it.
const everyKind = `
macros:
  failed: app == "sshd" && action == "logon" && outcome == "failure"
  accepted: app == "sshd" && action == "logon" && outcome == "success"
rules:
  - {id: brute, title: T, kind: threshold, severity: high, condition: failed, group_by: [src_ip], threshold: 4, window: 2m, suppress: 10m, fields: [src_ip, user, host]}
  - {id: spray, title: T, kind: distinct, severity: high, condition: failed, group_by: [src_ip], field: user, threshold: 3, window: 5m, fields: [src_ip]}
  - id: brute-then-in
    title: T
    kind: sequence
    severity: critical
    window: 10m
    steps:
      - {name: failures, condition: failed, by: [src_ip], count: 3}
      - {name: success, condition: accepted, by: [src_ip]}
    fields: [src_ip, user]
  - id: in-and-fail
    title: T
    kind: sequence
    unordered: true
    severity: medium
    window: 3m
    steps:
      - {name: in, condition: accepted, by: [user]}
      - {name: fail, condition: failed, by: [user]}
  - {id: root-in, title: T, kind: match, severity: medium, condition: 'accepted && user == "root"', group_by: [host, src_ip], suppress: 5m, fields: [host, src_ip]}
  - {id: any-accept, title: T, kind: match, severity: low, condition: accepted, group_by: [user]}
  - {id: silent, title: T, kind: absence, severity: medium, condition: 'host != ""', group_by: [host], for: 30m, fields: [host]}
  - {id: backup-unfinished, title: T, kind: absence, severity: medium, group_by: [host], for: 10m, condition: 'app == "backup" && message == "start"', expect: 'app == "backup" && message == "done"', fields: [host]}
  - {id: new-user, title: T, kind: new_value, severity: low, condition: accepted, group_by: [host], field: user, learning: 20m, fields: [host, user]}
`

// randomStream writes a seeded stream of n RFC 5424 lines and the events
// the syslog source makes of them (ids are line numbers, as in replay).
//
// Time moves on by up to 20s a line, with ties; one line in ten is up to
// 90s behind the newest (within the 2m allowed lateness of the gate and of
// the watermark), one in thirty 10 to 15 minutes behind its host's newest
// (late: the gate refuses it), and now and then every host goes silent for
// 31 to 60 minutes. Nothing is admitted behind the watermark, where when a
// driver checks deadlines would matter (see aggregator/engine).
func randomStream(t *testing.T, seed uint64, n int) ([]byte, []*event.Event) {
	rng := rand.New(rand.NewPCG(seed, 0x0e1e))
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	hosts := []string{"web-01", "web-02", "db-01", "bastion"}
	ips := []string{"203.0.113.5", "203.0.113.9", "198.51.100.7", "192.0.2.44"}
	users := []string{"root", "admin", "alice", "oracle", "deploy"}
	now := base
	newest := map[string]time.Time{}
	var buf bytes.Buffer
	for i := range n {
		host := hosts[rng.IntN(len(hosts))]
		if i < len(hosts) {
			host = hosts[i] // every host is known before anything is late
		}
		at := now
		switch r := rng.IntN(60); {
		case i < len(hosts):
		case r < 6:
			at = now.Add(-time.Duration(rng.IntN(90)) * time.Second)
		case r < 8:
			at = newest[host].Add(-10*time.Minute - time.Duration(rng.IntN(300))*time.Second)
		case r < 9:
			now = now.Add(31*time.Minute + time.Duration(rng.IntN(30))*time.Minute)
			at = now
		case r < 15:
			// a tie
		default:
			now = now.Add(time.Duration(rng.IntN(20)) * time.Second)
			at = now
		}
		if at.After(newest[host]) {
			newest[host] = at
		}
		app, msg := "sshd", ""
		ip, user := ips[rng.IntN(len(ips))], users[rng.IntN(len(users))]
		switch r := rng.IntN(20); {
		case r < 11:
			msg = "Failed password for " + user + " from " + ip + " port 50022 ssh2"
		case r < 14:
			msg = "Accepted password for " + user + " from " + ip + " port 50022 ssh2"
		case r < 16:
			app, msg = "backup", "start"
		case r < 17:
			app, msg = "backup", "done"
		default:
			app, msg = "cron", "tick"
		}
		fmt.Fprintf(&buf, "<38>1 %s %s %s - - - %s\n", at.Format(time.RFC3339), host, app, msg)
	}
	lines := buf.Bytes()
	return lines, parseAsReplay(t, lines)
}

// parseAsReplay is the events the syslog source makes of lines, as replay
// parses them: ids are line numbers.
func parseAsReplay(t *testing.T, lines []byte) []*event.Event {
	t.Helper()
	parser := syslog.NewParser(syslog.WithoutIDs())
	var events []*event.Event
	for i, line := range bytes.Split(bytes.TrimSuffix(lines, []byte{'\n'}), []byte{'\n'}) {
		ev := &event.Event{}
		if err := parser.Parse(line, differentialReceived, replaySender, ev); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		ev.ID = strconv.Itoa(i + 1)
		events = append(events, ev)
	}
	return events
}

// differentialReceived is every random line's reception: after all of
// them, so no event is stamped ahead of it.
var differentialReceived = time.Date(2026, 12, 31, 0, 0, 0, 0, time.UTC)

// compareDrivers runs events through the three drivers and fails t where
// their alerts differ. lines, if given, is what replay reads (syslog);
// otherwise it reads the events as JSON. It returns the alerts.
func compareDrivers(t *testing.T, set *rules.Set, events []*event.Event, lines []byte, advance time.Duration) []*event.Alert {
	t.Helper()
	return compareDriversWith(t, set, events, lines, advance, nil)
}

// compareDriversWith is compareDrivers with tweak, if not nil, editing the
// live windows' config.
func compareDriversWith(t *testing.T, set *rules.Set, events []*event.Event, lines []byte, advance time.Duration, tweak func(*window.Config)) []*event.Alert {
	t.Helper()
	ids := make([]string, 0, len(set.Rules))
	for _, r := range set.Rules {
		ids = append(ids, r.ID)
	}
	tested, err := ruletest.Alerts(set, &rules.Test{Rules: ids, Events: events, Advance: advance})
	if err != nil {
		t.Fatal(err)
	}

	opts := replayOptions{Workers: 2, Received: differentialReceived, Advance: advance}
	if lines == nil {
		opts.Events = true
		var buf bytes.Buffer
		for _, ev := range events {
			data, err := json.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			buf.Write(data)
			buf.WriteByte('\n')
		}
		lines = buf.Bytes()
	}
	replayed, st := replayAll(t, lines, set.Rules, opts)
	if st.Unparsed != 0 {
		t.Fatalf("replay could not read %d lines", st.Unparsed)
	}

	// The newest match time, where the live windows' idle advance must
	// take the watermark: as the engine computes it.
	lo := engine.NewLocal(set.Rules, engine.DefaultLateness())
	for _, ev := range events {
		_, _ = lo.Event(ev)
	}
	var end time.Time // no event admitted: no deadline to move to
	if lo.Watermark.Max() > 0 {
		end = time.Unix(0, lo.Watermark.Max()).Add(advance)
	}
	live := liveAlerts(t, set, events, end, tweak)
	if tweak == nil {
		// The same once more with the rule filter handing its matches to
		// the windows in process (windows.fused), not over MATCHES.
		fused := liveAlerts(t, set, events, end, func(c *window.Config) { c.Fused = new(true) })
		want := alertJSON(t, tested, true)
		if got := alertJSON(t, fused, true); !slices.Equal(got, want) {
			t.Errorf("the fused live pipeline and rules test differ (%d and %d alerts):\n%s", len(got), len(want), setDiff(got, want))
		}
	}

	want := alertJSON(t, tested, true)
	if got := alertJSON(t, replayed, true); !slices.Equal(got, want) {
		t.Errorf("rules replay and rules test differ (%d and %d alerts):\n%s", len(got), len(want), setDiff(got, want))
	}
	if got := alertJSON(t, live, true); !slices.Equal(got, want) {
		t.Errorf("the live pipeline and rules test differ (%d and %d alerts):\n%s", len(got), len(want), setDiff(got, want))
	}
	return tested
}

// setDiff lists what only got has (+) and what only want has (-), both
// sorted.
func setDiff(got, want []string) string {
	var b strings.Builder
	i, j := 0, 0
	for i < len(got) || j < len(want) {
		switch {
		case j == len(want) || (i < len(got) && got[i] < want[j]):
			b.WriteString("  + " + got[i] + "\n")
			i++
		case i == len(got) || want[j] < got[i]:
			b.WriteString("  - " + want[j] + "\n")
			j++
		default:
			i++
			j++
		}
	}
	return b.String()
}

// liveAlerts publishes events to EVENTS of a fresh embedded JetStream and
// runs the rule filter and the windows stage (Badger in a temp dir) over
// them until both streams are drained; then it sets the windows' clock to
// end (unless zero), far enough past the last advance for the idle
// watermark to follow it, checks the deadlines, and returns what ALERTS
// holds.
func liveAlerts(t *testing.T, set *rules.Set, events []*event.Event, end time.Time, tweak func(*window.Config)) []*event.Alert {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := bustest.Open(ctx, t)
	db := statetest.Open(t)
	// Checkpoints often: the drains below wait for the acks that follow
	// them.
	wcfg := window.Config{CheckpointInterval: 20 * time.Millisecond}
	if tweak != nil {
		tweak(&wcfg)
	}
	if err := wcfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// The clock stands still (no idle advance) until the input is in.
	var clock atomic.Int64
	clock.Store(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	reg := prometheus.NewRegistry()
	f, err := filter.New(b, set, wcfg.Lateness, logger, reg)
	if err != nil {
		t.Fatal(err)
	}
	w, err := window.New(wcfg, b, db, set, logger, reg, window.WithClock(now))
	if err != nil {
		t.Fatal(err)
	}
	if wcfg.IsFused() {
		f.Fuse(w)
	}
	if err := b.PublishEvents(ctx, events); err != nil {
		t.Fatal(err)
	}
	stopFilter := bustest.Run(ctx, t, f.Run)
	defer stopFilter()
	stopWindows := bustest.Run(ctx, t, w.Run)
	defer stopWindows()
	// EVENTS and MATCHES are work queues: empty once every batch was
	// acked, which the windows do after the batch's state is committed.
	for _, stream := range []string{bus.StreamEvents, bus.StreamMatches} {
		bustest.WaitDrained(ctx, t, b, stream)
	}
	if !end.IsZero() {
		if end.Sub(now()) <= wcfg.IdleAdvance {
			t.Fatalf("the end %s is too close to the clock's start for the idle advance", end)
		}
		clock.Store(end.UnixNano()) // the watermark: the clock minus the lateness
		if err := w.CheckDeadlines(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var alerts []*event.Alert
	bustest.ReadStream(ctx, t, b, bus.StreamAlerts, func(m *jetstream.RawStreamMsg) {
		var a event.Alert
		if err := json.Unmarshal(m.Data, &a); err != nil {
			t.Fatal(err)
		}
		alerts = append(alerts, &a)
	})
	return alerts
}

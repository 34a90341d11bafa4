package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"testing/fstest"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/bus/bustest"
	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/filter"
	"github.com/outpost-siem/outpost/aggregator/state/statetest"
	"github.com/outpost-siem/outpost/aggregator/window"
	"github.com/outpost-siem/outpost/rules"
)

// TestReview16UpgradeAfterKill9: an embedded appliance killed (SIGKILL,
// three times at random moments of a backlog) under the unfused default
// of the versions before 2026-12-06, then run to the end under the new
// default (windows.fused unset: fused with the embedded server), raises
// the alerts the same binary raises uninterrupted. After the last kill it
// logs how many matches in MATCHES are of EVENTS messages the rule filter
// had not acked: those the filter hands again, fused, after the upgrade.
// OUTPOST_KILL_BIN runs another build; OUTPOST_UPGRADE_KEYS sets the
// stream's addresses (default 100,000), OUTPOST_UPGRADE_KILLS the kills
// (default 3).
func TestReview16UpgradeAfterKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the outpost binary")
	}
	keys, kills := 100_000, 3
	if v, err := strconv.Atoi(os.Getenv("OUTPOST_UPGRADE_KEYS")); err == nil && v > 0 {
		keys = v
	}
	if v, err := strconv.Atoi(os.Getenv("OUTPOST_UPGRADE_KILLS")); err == nil && v > 0 {
		kills = v
	}
	t.Parallel() // with the other tests that run the binary: they wait much
	_, events := manyKeysStream(t, 7, keys)
	bin := outpostBin(t)
	// Uninterrupted: the same alerts fused or not (TestOneEngine).
	want, described := uninterruptedRun(t, bin, events, keys, false)
	if len(want) < 500 {
		t.Fatalf("the uninterrupted run raised %d alerts; the stream proves little", len(want))
	}
	var pending int
	got, alerts := killedRunSwitching(t, bin, events, "windows: {fused: false}\n", "", kills,
		rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 16)), func(data string) {
			pending = 0
			var floor uint64
			withBus(t, data, func(ctx context.Context, b *bus.Bus) {
				js := b.JetStream()
				c, err := js.Consumer(ctx, bus.StreamEvents, "outpost-filter")
				if err != nil {
					t.Fatal(err)
				}
				floor = c.CachedInfo().AckFloor.Stream
				st, err := js.Stream(ctx, bus.StreamMatches)
				if err != nil {
					t.Fatal(err)
				}
				info := st.CachedInfo().State
				for seq := info.FirstSeq; info.Msgs > 0 && seq <= info.LastSeq; seq++ {
					m, err := st.GetMsg(ctx, seq)
					if err != nil {
						continue // acked: gone from the work queue
					}
					src, _ := bus.ParseSource(m.Header.Get(bus.HeaderSource))
					for _, r := range src.Runs {
						if r.Pos>>16 > floor {
							pending += r.N
						}
					}
				}
			})
			t.Logf("%d matches in MATCHES of EVENTS messages not acked (ack floor %d)", pending, floor)
		})
	t.Logf("at the last kill, %d matches in MATCHES were of EVENTS messages not acked (handed fused again after the upgrade)", pending)
	if !slices.Equal(got, want) {
		t.Errorf("%d alerts after the kills and the upgrade, %d uninterrupted; differing (rule, key, first seen): %v", len(got), len(want), alertDiff(got, want, alerts, described))
	}
}

// TestReview16GracefulUpgradeWithMatchesLeft: an unfused appliance
// stopped gracefully with matches still in MATCHES (the windows were
// behind the rule filter: its events acked, their matches not yet
// applied), upgraded to the fused default. The windows consume what
// MATCHES holds while the fused filter hands them the newer events' matches:
// the live pipeline must raise the alerts it raises on the same events
// in one mode.
func TestReview16GracefulUpgradeWithMatchesLeft(t *testing.T) {
	set, err := rules.LoadFS(fstest.MapFS{"kinds.yaml": {Data: []byte(everyKind)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	_, events := manyKeysStream(t, 1, 30_000)
	want := alertJSON(t, liveAlerts(t, set, events, time.Time{}, nil), true)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := bustest.Open(ctx, t)
	db := statetest.Open(t)
	lateness := engine.DefaultLateness()
	half := len(events) / 2
	if err := b.PublishEvents(ctx, events[:half]); err != nil {
		t.Fatal(err)
	}
	// The old version: the rule filter over MATCHES, the windows behind.
	old, err := filter.New(b, set, lateness, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	stop := bustest.Run(ctx, t, old.Run)
	bustest.WaitDrained(ctx, t, b, bus.StreamEvents)
	stop()
	if err := b.PublishEvents(ctx, events[half:]); err != nil {
		t.Fatal(err)
	}
	// The new: fused.
	wcfg := window.Config{CheckpointInterval: 20 * time.Millisecond, Fused: new(true)}
	if err := wcfg.Validate(); err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	reg := prometheus.NewRegistry()
	f, err := filter.New(b, set, wcfg.Lateness, logger, reg)
	if err != nil {
		t.Fatal(err)
	}
	w, err := window.New(wcfg, b, db, set, logger, reg, window.WithClock(func() time.Time { return clock }))
	if err != nil {
		t.Fatal(err)
	}
	f.Fuse(w)
	stopFilter := bustest.Run(ctx, t, f.Run)
	stopWindows := bustest.Run(ctx, t, w.Run)
	for _, stream := range []string{bus.StreamEvents, bus.StreamMatches} {
		bustest.WaitDrained(ctx, t, b, stream)
	}
	stopFilter()
	stopWindows()
	if mfs, err := reg.Gather(); err == nil {
		for _, mf := range mfs {
			if n := mf.GetName(); n == "outpost_windows_republished_matches_total" || n == "outpost_windows_redelivered_messages_total" || n == "outpost_windows_matches_total" || n == "outpost_filter_events_total" {
				for _, m := range mf.GetMetric() {
					t.Logf("%s %v %v", n, m.GetLabel(), m.GetCounter().GetValue())
				}
			}
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
	if got := alertJSON(t, alerts, true); !slices.Equal(got, want) {
		t.Errorf("upgraded with matches left in MATCHES: %d alerts, %d in one mode:\n%s", len(got), len(want), setDiff(got, want))
	}
}

package window

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/bus/bustest"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/state"
	"github.com/outpost-siem/outpost/aggregator/state/statetest"
	"github.com/outpost-siem/outpost/rules"
)

// Crash safety of the checkpoint (stage.go's package comment): a stage is
// killed at every step of a checkpoint (the kill hook stops it there, as
// kill -9 would: nothing after the step happens), a new stage starts on
// the same Badger and state log and is handed every batch not acked at
// the position it had, as JetStream redelivers them; the alerts JetStream
// would hold, and the states, equal an uninterrupted run's.

const crashRules = `
  - {id: many, title: T, kind: threshold, severity: 5, condition: 'host != ""', group_by: [host], threshold: 3, window: 2m}
  - {id: spread, title: T, kind: distinct, severity: 5, condition: 'host != ""', group_by: [host], field: user, threshold: 3, window: 10m, suppress: 5m}
  - {id: silent, title: T, kind: absence, severity: 5, condition: 'host != ""', group_by: [host], for: 15m, fields: [host]}
  - {id: each, title: T, kind: match, severity: 5, condition: 'host != ""', group_by: [host], suppress: 10m}`

// crashStream is a seeded stream of batches of matches of crashRules over
// 30 hosts, event time moving on about 20s per batch, with ties, a little
// disorder and hosts that fall silent (absence alerts).
func crashStream(seed uint64, n int) [][]*event.Match {
	rng := rand.New(rand.NewPCG(seed, 1))
	var out [][]*event.Match
	at := t0
	id := 0
	for b := range n {
		var batch []*event.Match
		for range 2 + rng.IntN(8) {
			host := rng.IntN(30)
			if b > n/3 && host < 6 {
				host += 6 // hosts 0-5 fall silent after a third
			}
			h := fmt.Sprintf("h%02d", host)
			when := at.Add(-time.Duration(rng.IntN(30)) * time.Second)
			id++
			eid := fmt.Sprintf("e%05d", id)
			user := fmt.Sprintf("u%d", rng.IntN(5))
			for _, rule := range []string{"many", "spread", "silent", "each"} {
				m := match(rule, h, eid, when)
				if rule == "spread" {
					m.Value = user
				}
				batch = append(batch, m)
			}
		}
		out = append(out, batch)
		at = at.Add(time.Duration(5+rng.IntN(30)) * time.Second)
	}
	return out
}

// crashRun is one run over one Badger: the alerts every stage of it
// published (what JetStream would hold: an alert's id is its Nats-Msg-Id).
type crashRun struct {
	t         *testing.T
	db        *state.DB
	bus       *bus.Bus // the JetStream every stage of the run shares (its state log)
	set       *rules.Set
	mu        sync.Mutex
	published map[string]string // alert id -> rule
	tweak     func(*Config)
}

func newCrashRun(t *testing.T) *crashRun {
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte("rules:" + crashRules + "\n")}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	return &crashRun{t: t, db: statetest.Open(t), bus: bustest.Open(context.Background(), t), set: set, published: map[string]string{}}
}

// stage starts a stage on the run's Badger, as Run would (watermark and
// key counts loaded, checkpointer running), with kill as its kill hook.
func (r *crashRun) stage(ctx context.Context, kill func(string) error) (s *Stage, stop func()) {
	t := r.t
	cfg := Config{CheckpointInterval: time.Hour}
	if r.tweak != nil {
		r.tweak(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, r.bus, r.db, r.set, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{}
	clock.set(t0)
	s.now = clock.now
	s.kill = kill
	s.logChunk = 300 // a checkpoint's record in several messages, so "half" splits it
	s.publish = func(alerts []*event.Alert) (func(context.Context) error, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, a := range alerts {
			r.published[a.ID] = a.RuleID
		}
		return func(context.Context) error { return nil }, nil
	}
	return s, startCheckpointer(ctx, t, s)
}

// drive hands batches to s in order, a checkpoint (then the deadline
// checks, as Run does) after every fifth and after the last. It returns
// how many batches are acked: applied and durable, when the stage was
// killed.
func drive(ctx context.Context, t *testing.T, s *Stage, batches [][]*event.Match) int {
	t.Helper()
	return driveAt(ctx, t, s, batches, 1)
}

// driveAt is drive with the batches as MATCHES messages at stream
// sequences first, first+1, ...: a redelivery hands the batches not acked
// again at the positions they had.
func driveAt(ctx context.Context, t *testing.T, s *Stage, batches [][]*event.Match, first int) int {
	t.Helper()
	acked := 0
	for i, batch := range batches {
		if _, err := applyBatchAt(ctx, s, uint64(first+i), batch); errors.Is(err, errKilled) {
			return acked // killed by an early checkpoint (cache_keys / 2 states waiting)
		} else if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		if (i+1)%5 != 0 && i != len(batches)-1 {
			continue
		}
		for range 3 { // a checkpoint moves the watermark, which may pass more deadlines
			switch err := s.Checkpoint(ctx); {
			case errors.Is(err, errKilled):
				return acked
			case err != nil:
				t.Fatal(err)
			}
			acked = i + 1
			if _, err := s.expire(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	return acked
}

// killAndRedeliver drives batches through a stage killed at step of the
// at-th phase (a checkpoint's seal, or a compaction), then through a new
// stage on the same Badger and state log the batches not acked, at their
// positions, as JetStream hands them again; it returns how many were
// acked before the kill.
func (r *crashRun) killAndRedeliver(ctx context.Context, batches [][]*event.Match, phase, step string, at int) int {
	t := r.t
	t.Helper()
	n := 0
	s, stop := r.stage(ctx, func(name string) error {
		if name == phase {
			n++
		}
		if name == step && n == at {
			return errors.New("kill -9")
		}
		return nil
	})
	acked := drive(ctx, t, s, batches)
	stop()
	if !s.killed.Load() {
		t.Fatalf("never killed at %s of %s %d", step, phase, at)
	}
	s2, stop2 := r.stage(ctx, nil)
	driveAt(ctx, t, s2, batches[acked:], acked+1)
	stop2()
	return acked
}

// states is every window state in Badger, encoded, by key.
func (r *crashRun) states() map[string]string {
	return storedStates(r.t, r.db, r.bus.JetStream())
}

func (r *crashRun) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.published))
}

func TestKillAtEveryStepOfACheckpoint(t *testing.T) {
	// With every state in the cache, and with a cache of 8 states in
	// front of the cold tier (whose budget holds ~30 of them), so that
	// states go through eviction, cold and Badger at every step.
	for _, c := range []struct {
		name  string
		tweak func(*Config)
	}{
		{"cached", nil},
		{"cold", func(c *Config) { c.CacheKeys, c.CheckpointKeys, c.ColdBytes = 8, 8, 4<<10 }},
		// A compaction of the state log after every checkpoint.
		{"compacted", func(c *Config) { c.CacheKeys, c.CheckpointKeys, c.StateLog.Memory = 8, 8, 1 }},
	} {
		t.Run(c.name, func(t *testing.T) { killAtEveryStep(t, c.tweak) })
	}
}

func killAtEveryStep(t *testing.T, tweak func(*Config)) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	batches := crashStream(7, 150)

	ref := newCrashRun(t)
	ref.tweak = tweak
	s, stop := ref.stage(ctx, nil)
	drive(ctx, t, s, batches)
	stop()
	t.Logf("states read back: %d from cold, %d from the log, %d from Badger", s.coldReads.Load(), s.logReads.Load(), s.badgerReads.Load())
	if s.cfg.ColdBytes > 0 {
		if s.coldReads.Load() == 0 {
			t.Fatal("no state was read back from cold: the cold tier is not exercised")
		}
	}
	wantIDs, wantStates := ref.ids(), ref.states()
	kinds := map[string]int{}
	for _, rule := range ref.published {
		kinds[rule]++
	}
	t.Logf("uninterrupted: %d alerts (by rule %v), %d states", len(wantIDs), kinds, len(wantStates))
	if len(wantIDs) < 20 || len(kinds) < 4 {
		t.Fatalf("the stream raises too few alerts to tell anything: %v", kinds)
	}

	steps := []string{"sealed", "acked", "sets", "half", "logged", "deleted", "marked"}
	if n := testutil.ToFloat64(s.compactionsDone.WithLabelValues("ok")); n > 0 {
		t.Logf("%.0f compactions of the state log", n)
		steps = append(steps, "compact", "compact-half", "compact-states", "compact-marked")
	}
	for _, step := range steps {
		// The step's phase: a checkpoint, counted by its seal, or a
		// compaction of the state log.
		phase := "sealed"
		if strings.HasPrefix(step, "compact") {
			phase = "compact"
		}
		// The checkpoint (or compaction) killed. Checkpoints come where
		// drive asks for them; a compaction starts after a checkpoint only
		// if the one before has ended, so a slow machine runs fewer (the
		// reference ran ~25): the kills come early enough to be reached.
		ats := []int{1, 7, 20}
		if phase == "compact" {
			ats = []int{1, 4, 8}
		}
		for _, at := range ats {
			t.Run(fmt.Sprintf("%s/%s%d", step, phase, at), func(t *testing.T) {
				run := newCrashRun(t)
				run.tweak = tweak
				acked := run.killAndRedeliver(ctx, batches, phase, step, at)
				if got := run.ids(); !slices.Equal(got, wantIDs) {
					t.Errorf("killed at %s of checkpoint %d (%d batches acked): alerts differ from the uninterrupted run's\n got %d: %v\nwant %d: %v", step, at, acked, len(got), got, len(wantIDs), wantIDs)
				}
				if got := run.states(); !maps.Equal(got, wantStates) {
					t.Errorf("killed at %s of checkpoint %d: %d of %d states differ from the uninterrupted run's (%d states)", step, at, logStateDiff(t, got, wantStates), len(wantStates), len(got))
				}
			})
		}
	}
}

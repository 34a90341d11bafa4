package window

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/bus/bustest"
	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/filter"
)

// Review 16: windows.fused now defaults to true with the embedded server,
// so an appliance upgraded after a crash of the unfused version switches
// mode with EVENTS messages unacked whose matches are in MATCHES (applied
// or not). The rule filter evaluates those messages again and hands their
// matches fused: the two modes kept their EVENTS positions apart (one
// account per partition, one fused), so those matches were applied a
// second time. For every probe case (a rule kind for which applying a
// match twice is not a no-op), the alerts and states must be those of a
// run that saw each match once, whichever order the fused batch and the
// MATCHES messages left come in.
func TestReview16SwitchToFusedAfterACrash(t *testing.T) {
	for name, c := range probeCases() {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			ref := newProbeRun(t, c.rule)
			applyFusedStopped(ctx, t, ref, c.batches)
			first := min(5, len(c.batches)) // the first checkpoint's (pad)

			// Unfused: the first checkpoint's matches (pad: the first five
			// EVENTS messages') applied and checkpointed, the filter killed
			// before it acked their events; fused after the restart: the
			// filter hands them again, then the rest.
			t.Run("applied unfused, then handed fused", func(t *testing.T) {
				run := appliedUnfused(ctx, t, c.rule, c.batches[:first])
				s2 := applyFusedStopped(ctx, t, run, c.batches)
				if n := testutil.ToFloat64(s2.republished); int(n) != matchCount(c.batches[:first]) {
					t.Errorf("%v of %d matches applied unfused and handed fused recognised", n, matchCount(c.batches[:first]))
				}
				sameAsSingleRun(t, run, ref)
			})
			// The same, killed again once fused: the filter hands again
			// what the fused run applied, with the rest.
			t.Run("applied unfused, handed fused, killed, handed fused again", func(t *testing.T) {
				if first == len(c.batches) {
					t.Skip("one batch: nothing new the second time")
				}
				run := appliedUnfused(ctx, t, c.rule, c.batches[:first])
				applyFusedStopped(ctx, t, run, c.batches[:first])
				s3 := applyFusedStopped(ctx, t, run, c.batches)
				if n := testutil.ToFloat64(s3.republished); int(n) != matchCount(c.batches[:first]) {
					t.Errorf("%v of %d matches handed fused again recognised", n, matchCount(c.batches[:first]))
				}
				sameAsSingleRun(t, run, ref)
			})
			// Unfused: the first five EVENTS messages' matches published,
			// not yet applied, when the process was killed; fused after the
			// restart: the filter hands them again with the rest, and
			// MATCHES hands its messages too.
			t.Run("handed fused, then left in MATCHES", func(t *testing.T) {
				run := newProbeRun(t, c.rule)
				js := run.bus.JetStream()
				cons := matchesConsumer(ctx, t, js)
				left := publishPartitioned(ctx, t, js, cons, c.batches[:first], run.bus.Partitions())
				s, stop := run.stage(ctx, nil)
				applyFusedAll(ctx, t, s, c.batches)
				settleAll(ctx, t, s)
				handleAll(ctx, t, s, left)
				stop()
				if n := testutil.ToFloat64(s.republished); int(n) != matchCount(c.batches[:first]) {
					t.Errorf("%v of %d matches left in MATCHES, handed fused first, recognised", n, matchCount(c.batches[:first]))
				}
				sameAsSingleRun(t, run, ref)
			})
		})
	}
}

// publishPartitioned publishes each non-empty batch as the unfused rule
// filter does for the EVENTS message at sequence i+1: one MATCHES message
// per partition its matches hash to (rule, group key), with the EVENTS
// position it comes from, and fetches them through cons.
func publishPartitioned(ctx context.Context, t *testing.T, js jetstream.JetStream, cons jetstream.Consumer, batches [][]*event.Match, parts int) []jetstream.Msg {
	t.Helper()
	n := 0
	for i, batch := range batches {
		byPart := map[uint32][]*event.Match{}
		var order []uint32
		for _, m := range batch {
			p := bus.Partition(m.RuleID, m.Key, uint32(parts))
			if byPart[p] == nil {
				order = append(order, p)
			}
			byPart[p] = append(byPart[p], m)
		}
		for _, p := range order {
			msg := nats.NewMsg("matches." + strconv.Itoa(int(p)))
			for _, m := range byPart[p] {
				msg.Data = bus.AppendRecord(msg.Data, event.AppendMatch(nil, m))
			}
			pos, _ := bus.SourcePosition(uint64(i+1), 0)
			msg.Header.Set(bus.HeaderSource, strconv.FormatUint(pos, 10)+" 0:"+strconv.Itoa(len(byPart[p])))
			if _, err := js.PublishMsg(ctx, msg); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	return fetchFrom(t, cons, n)
}

// captureSink keeps the first batch the rule filter hands it fused, and
// refuses every batch (its wait fails), so that none is acked.
type captureSink struct {
	mu       sync.Mutex
	ms       []event.Match
	src      []bus.Source
	newest   int64
	captured chan struct{}
}

func (c *captureSink) Consumer(cc bus.ConsumerConfig) bus.ConsumerConfig { return cc }

func (c *captureSink) Apply(_ context.Context, ms []event.Match, src []bus.Source, newest int64, _ int) (func() error, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ms == nil {
		c.ms, c.newest = slices.Clone(ms), newest
		for _, s := range src {
			c.src = append(c.src, bus.Source{From: s.From, Runs: slices.Clone(s.Runs)})
		}
		close(c.captured)
	}
	return func() error { return errors.New("refused") }, nil
}

// The same with the real rule filter, and an EVENTS message whose
// matches for one partition are cut into runs (64 KiB each) that span two
// MATCHES messages: the first one applied unfused and checkpointed before
// the kill, the second left in MATCHES. Fused after the restart, the
// windows skip the matches of the first (placed in their run by their
// sizes, as the filter cut them) and apply the others, then skip the
// second MATCHES message: each match applied once.
func TestReview16SwitchToFusedSplitsRunsAsTheFilterDid(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const rule = `
  - {id: many, title: T, kind: threshold, severity: 5, condition: 'host != ""', group_by: [host], fields: [message], threshold: 1000000, window: 24h}`
	run := newProbeRun(t, rule)
	b, js := run.bus, run.bus.JetStream()
	var evs []*event.Event
	for i := range 1500 {
		at := t0.Add(time.Duration(i) * time.Millisecond)
		msg := fmt.Sprintf("%d %x", i, sha256.Sum256([]byte(strconv.Itoa(i))))
		evs = append(evs, &event.Event{ID: fmt.Sprintf("ev%05d", i), Source: "syslog", Host: "h1", Time: at, Received: at, Message: strings.Repeat(msg, 4)})
	}
	if err := b.PublishEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	lateness := engine.Lateness{AllowedLateness: time.Hour}
	// Fused, captured and never acked; then over MATCHES, acked.
	sink := &captureSink{captured: make(chan struct{})}
	f, err := filter.New(b, run.set, lateness, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	f.Fuse(sink)
	stop := bustest.Run(ctx, t, f.Run)
	select {
	case <-sink.captured:
	case <-ctx.Done():
		t.Fatal("the fused filter handed nothing")
	}
	stop()
	f, err = filter.New(b, run.set, lateness, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	stop = bustest.Run(ctx, t, f.Run)
	bustest.WaitDrained(ctx, t, b, bus.StreamEvents)
	stop()
	st, err := js.Stream(ctx, bus.StreamMatches)
	if err != nil {
		t.Fatal(err)
	}
	msgs := fetchFrom(t, matchesConsumer(ctx, t, js), int(st.CachedInfo().State.Msgs))
	// The first message whose first run continues the EVENTS message of
	// the last run of the message before it (chunk 1 or more).
	split := 0
	for i := 1; i < len(msgs) && split == 0; i++ {
		prev, _ := bus.ParseSource(msgs[i-1].Headers().Get(bus.HeaderSource))
		cur, _ := bus.ParseSource(msgs[i].Headers().Get(bus.HeaderSource))
		if len(prev.Runs) > 0 && len(cur.Runs) > 0 && msgs[i].Subject() == msgs[i-1].Subject() && cur.Runs[0].Pos>>16 == prev.Last()>>16 {
			split = i
		}
	}
	if split == 0 {
		t.Fatalf("no EVENTS message's runs span two of the %d MATCHES messages: the test proves nothing", len(msgs))
	}
	total := matchCount([][]*event.Match{ptrs(sink.ms)})
	if total != len(evs) {
		t.Fatalf("%d matches handed fused, want %d", total, len(evs))
	}

	ref := newProbeRun(t, rule)
	s, stopRef := ref.stage(ctx, nil)
	s.applyFused(ctx, &fusedBatch{ms: slices.Clone(sink.ms), src: sink.src, newest: sink.newest, applied: make(chan struct{})})
	settleAll(ctx, t, s)
	stopRef()

	s, stopS := run.stage(ctx, nil)
	handleAll(ctx, t, s, msgs[:split]) // unfused, before the kill
	stopS()
	s, stopS = run.stage(ctx, nil) // fused, after the restart
	fb := &fusedBatch{ms: slices.Clone(sink.ms), src: sink.src, newest: sink.newest, applied: make(chan struct{})}
	s.applyFused(ctx, fb)
	if fb.err != nil {
		t.Fatal(fb.err)
	}
	handleAll(ctx, t, s, msgs[split:])
	stopS()
	if n := testutil.ToFloat64(s.republished); int(n) != total {
		t.Errorf("%v of %d matches recognised as applied once already (%d MATCHES messages, split at %d)", n, total, len(msgs), split)
	}
	sameAsSingleRun(t, run, ref)
}

func ptrs(ms []event.Match) []*event.Match {
	out := make([]*event.Match, len(ms))
	for i := range ms {
		out[i] = &ms[i]
	}
	return out
}

// Review 16: the windows stage consumes MATCHES while the rule filter
// hands it matches fused: what an unfused run left in MATCHES (its events
// acked, its matches not yet applied: the windows were behind at a
// graceful stop, or at a kill) was applied concurrently with newer events'
// matches handed fused. A key's older matches applied after its newer ones
// are spent (an alert spends its events through its last time): the
// leftovers' alerts were lost (TestReview16GracefulUpgradeWithMatchesLeft,
// cmd/outpost: 1,427 of 12,518 alerts, one run in three). Fused, the
// stage applies nothing handed fused before what MATCHES held when it
// started is durable.
func TestReview16FusedWaitsForMatchesLeft(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const rule = `
  - {id: many, title: T, kind: threshold, severity: 5, condition: 'host != ""', group_by: [host], threshold: 3, window: 2m}`
	m := func(id string, d time.Duration) *event.Match { return match("many", "h1", id, t0.Add(d)) }
	left := [][]*event.Match{{m("a1", 0), m("a2", 10*time.Second), m("a3", 20*time.Second)}} // EVENTS message 1
	fused := [][]*event.Match{nil, {m("b1", 10*time.Minute), m("b2", 10*time.Minute+10*time.Second), m("b3", 10*time.Minute+20*time.Second)}}

	ref := newProbeRun(t, rule)
	s := applyFusedStopped(ctx, t, ref, append(slices.Clone(left), fused[1:]...))
	if len(ref.ids()) != 2 {
		t.Fatalf("the reference raised %v, want 2 alerts", ref.published)
	}

	run := newProbeRun(t, rule)
	js := run.bus.JetStream()
	for i, batch := range left { // as the unfused filter published them
		msg := nats.NewMsg("matches." + strconv.Itoa(int(bus.Partition("many", "host=h1", uint32(run.bus.Partitions())))))
		for _, m := range batch {
			msg.Data = bus.AppendRecord(msg.Data, event.AppendMatch(nil, m))
		}
		pos, _ := bus.SourcePosition(uint64(i+1), 0)
		msg.Header.Set(bus.HeaderSource, strconv.FormatUint(pos, 10)+" 0:"+strconv.Itoa(len(batch)))
		msg.Header.Set(bus.HeaderWatermark, strconv.FormatInt(batch[len(batch)-1].Time.UnixNano(), 10))
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{CheckpointInterval: 20 * time.Millisecond}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, run.bus, run.db, run.set, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s.publish = func(alerts []*event.Alert) (func(context.Context) error, error) {
		run.mu.Lock()
		defer run.mu.Unlock()
		for _, a := range alerts {
			run.published[a.ID] = a.RuleID
		}
		return func(context.Context) error { return nil }, nil
	}
	// The fused filter hands the newer events as soon as the stage runs.
	var ms []event.Match
	for _, m := range fused[1] {
		ms = append(ms, *m)
	}
	pos, _ := bus.SourcePosition(2, 0)
	wait, err := s.Apply(ctx, ms, []bus.Source{{From: pos, Runs: []bus.SourceRun{{Pos: pos, N: len(ms)}}}}, ms[len(ms)-1].Time.UnixNano(), 100)
	if err != nil {
		t.Fatal(err)
	}
	rctx, stopRun := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(rctx) }()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	bustest.WaitDrained(ctx, t, run.bus, bus.StreamMatches)
	stopRun()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, want := run.ids(), ref.ids(); !slices.Equal(got, want) {
		t.Errorf("alerts %v, want %v (the matches left in MATCHES applied first)", run.published, ref.published)
	}
}

// appliedUnfused is a probe run whose stage applied batches over MATCHES
// (publishPartitioned), checkpointed them and stopped: an unfused run
// killed before its rule filter acked the events.
func appliedUnfused(ctx context.Context, t *testing.T, rule string, batches [][]*event.Match) *crashRun {
	t.Helper()
	run := newProbeRun(t, rule)
	js := run.bus.JetStream()
	cons := matchesConsumer(ctx, t, js)
	s, stop := run.stage(ctx, nil)
	handleAll(ctx, t, s, publishPartitioned(ctx, t, js, cons, batches, s.bus.Partitions()))
	stop()
	return run
}

// applyFusedStopped starts run's stage, hands it batches fused, waits for
// them to be checkpointed and stops it; it returns the stopped stage, for
// its metrics.
func applyFusedStopped(ctx context.Context, t *testing.T, run *crashRun, batches [][]*event.Match) *Stage {
	t.Helper()
	s, stop := run.stage(ctx, nil)
	applyFusedAll(ctx, t, s, batches)
	settleAll(ctx, t, s)
	stop()
	return s
}

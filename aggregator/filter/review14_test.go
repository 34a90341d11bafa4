package filter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/bus/bustest"
	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

// randSink is a fused sink that refuses a batch in Apply, or fails its
// wait, at random; used by one goroutine.
type randSink struct {
	rng           *rand.Rand
	pApply, pWait float64
}

func (k *randSink) Consumer(cc bus.ConsumerConfig) bus.ConsumerConfig { return cc }

func (k *randSink) Apply(context.Context, []event.Match, []bus.Source, int64, int) (func() error, error) {
	if k.rng.Float64() < k.pApply {
		return nil, errors.New("the sink refused the batch")
	}
	fail := k.rng.Float64() < k.pWait
	return func() error {
		if fail {
			return errors.New("the sink's wait failed")
		}
		return nil
	}, nil
}

// review14Events reads back what EVENTS holds: each message's events, by
// stream sequence, and the last sequence.
func review14Events(ctx context.Context, t *testing.T, b *bus.Bus) (map[uint64][]*event.Event, uint64) {
	t.Helper()
	bySeq := map[uint64][]*event.Event{}
	last := uint64(0)
	bustest.ReadStream(ctx, t, b, bus.StreamEvents, func(m *jetstream.RawStreamMsg) {
		last = max(last, m.Sequence)
		err := bus.DecodeEvents(m.Data, func(ev *event.Event) error {
			c := *ev
			bySeq[m.Sequence] = append(bySeq[m.Sequence], &c)
			return nil
		}, func([]byte, error) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
	})
	return bySeq, last
}

// referenceGate is a gate that admitted, uninterrupted, the events of
// EVENTS messages 1..floor in order.
func referenceGate(l engine.Lateness, bySeq map[uint64][]*event.Event, floor uint64) *engine.Gate {
	g := engine.NewGate(l)
	for seq := uint64(1); seq <= floor; seq++ {
		for _, ev := range bySeq[seq] {
			g.Admit(ev)
		}
	}
	return g
}

func sameGate(t *testing.T, what string, got, want *engine.Gate) {
	t.Helper()
	gw, ga := gateWatermarks(got)
	ww, wa := gateWatermarks(want)
	if ga != wa {
		t.Errorf("%s: newest %d, want %d", what, ga, wa)
	}
	if len(gw) != len(ww) {
		t.Errorf("%s: %d watermarks %v, want %d %v", what, len(gw), gw, len(ww), ww)
		return
	}
	for k, v := range ww {
		if gw[k] != v {
			t.Errorf("%s: %s at %d, want %d", what, k, gw[k], v)
		}
	}
}

// review14Driver hands a stage EVENTS messages as ConsumeAsync does
// (depth batches in flight; a failed wait fails the ones after it, and
// all are handed again in order, one at a time, after the stage's reset),
// and stops dead (a kill -9: nothing more is waited for or acked) once
// kill says so.
type review14Driver struct {
	ctx   context.Context
	t     *testing.T
	s     *Stage
	depth int
	kill  func() bool
}

type review14Batch struct {
	msgs []jetstream.Msg
	wait func() error
}

// ack acks msgs in order; false: killed part way (after a prefix).
func (d *review14Driver) ack(msgs []jetstream.Msg) bool {
	for _, m := range msgs {
		if d.kill() {
			return false
		}
		if err := m.DoubleAck(d.ctx); err != nil {
			d.t.Fatal(err)
		}
	}
	return true
}

// retry hands each batch again until it succeeds; false: killed.
func (d *review14Driver) retry(us []review14Batch) bool {
	for _, u := range us {
		for {
			if d.kill() {
				return false
			}
			d.s.undoAfter()
			wait, err := d.s.handle(d.ctx, u.msgs)
			if err == nil && wait != nil {
				err = wait()
			}
			if err == nil {
				break
			}
		}
		if !d.ack(u.msgs) {
			return false
		}
	}
	return true
}

// run hands batches in order; false: killed.
func (d *review14Driver) run(batches [][]jetstream.Msg) bool {
	var inflight []review14Batch
	take := func() bool {
		u := inflight[0]
		inflight = inflight[1:]
		err := u.wait()
		if d.kill() {
			return false
		}
		if err == nil {
			return d.ack(u.msgs)
		}
		failed := []review14Batch{u}
		for _, v := range inflight {
			_ = v.wait()
			failed = append(failed, v)
		}
		inflight = nil
		return d.retry(failed)
	}
	for _, msgs := range batches {
		if d.kill() {
			return false
		}
		wait, err := d.s.handle(d.ctx, msgs)
		if err != nil {
			for len(inflight) > 0 {
				if !take() {
					return false
				}
			}
			if !d.retry([]review14Batch{{msgs: msgs}}) {
				return false
			}
			continue
		}
		if wait == nil {
			wait = func() error { return nil }
		}
		inflight = append(inflight, review14Batch{msgs, wait})
		for len(inflight) > d.depth {
			if !take() {
				return false
			}
		}
	}
	for len(inflight) > 0 {
		if !take() {
			return false
		}
	}
	return true
}

// review14Kills runs rule filters over what EVENTS holds, each killed at
// a random point (between any handing, wait and ack, or part way through
// a batch's acks), with batches refused or failing at random (fused),
// until one drains EVENTS; at every restart the restored gate must be the
// gate that admitted the messages up to the ack floor uninterrupted.
func review14Kills(ctx context.Context, t *testing.T, rng *rand.Rand, b *bus.Bus, set *rules.Set, logger *slog.Logger, lateness engine.Lateness, maxBatch int) {
	t.Helper()
	bySeq, last := review14Events(ctx, t, b)
	js := b.JetStream()
	cons, err := js.CreateOrUpdateConsumer(ctx, bus.StreamEvents, jetstream.ConsumerConfig{
		Durable: "outpost-filter", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute,
		MaxAckPending: 4096, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	for run := 0; ; run++ {
		r, err := js.ResetConsumer(ctx, bus.StreamEvents, "outpost-filter")
		if err != nil {
			t.Fatal(err)
		}
		floor := r.AckFloor.Stream
		s, err := New(b, set, lateness, logger, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		final := run >= 6
		if rng.IntN(3) > 0 {
			p := 0.2
			if final {
				p = 0
			}
			s.Fuse(&randSink{rng: rng, pApply: p, pWait: p})
		}
		s.startGateLog(ctx, "outpost-filter", floor)
		if s.glog == nil {
			t.Fatalf("run %d: the gate log did not start", run)
		}
		ref := referenceGate(lateness, bySeq, floor)
		sameGate(t, fmt.Sprintf("run %d restored at floor %d", run, floor), s.gate, ref)
		if t.Failed() || floor == last {
			return
		}
		var msgs []jetstream.Msg
		for uint64(len(msgs)) < last-floor {
			fetched, err := cons.Fetch(int(last-floor)-len(msgs), jetstream.FetchMaxWait(2*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			for m := range fetched.Messages() {
				msgs = append(msgs, m)
			}
		}
		if md, _ := msgs[0].Metadata(); md.Sequence.Stream != floor+1 {
			t.Fatalf("run %d handed %d first, want %d", run, md.Sequence.Stream, floor+1)
		}
		var batches [][]jetstream.Msg
		for rest := msgs; len(rest) > 0; {
			n := min(len(rest), 1+rng.IntN(maxBatch))
			batches = append(batches, rest[:n])
			rest = rest[n:]
		}
		steps, killAt := 0, 1+rng.IntN(3*len(batches)+len(msgs))
		if final {
			killAt = -1
		}
		d := &review14Driver{ctx: ctx, t: t, s: s, depth: 1 + rng.IntN(3), kill: func() bool {
			steps++
			return steps == killAt
		}}
		done := d.run(batches)
		// What the killed run published reaches the stream.
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
		if done {
			sameGate(t, fmt.Sprintf("run %d, every message acked", run), s.gate, referenceGate(lateness, bySeq, last))
		}
	}
}

// Random events over a few hosts of two sources, some late, snapshots at
// almost every batch or rarely.
func TestReview14RandomKillsRestoreTheAckedGate(t *testing.T) {
	defer func(v int64) { gateSnapshotMin = v }(gateSnapshotMin)
	for seed := range uint64(24) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 14))
			gateSnapshotMin = []int64{1, 64, 512, 1 << 20}[rng.IntN(4)]
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			b, set, logger := openAnyBus(ctx, t)
			base := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
			for i := range 40 {
				var evs []*event.Event
				for j := range 1 + rng.IntN(4) {
					at := base.Add(time.Duration(i)*20*time.Second + time.Duration(rng.IntN(360)-300)*time.Second)
					src := []string{"syslog", "azure.signin"}[rng.IntN(2)]
					evs = append(evs, &event.Event{ID: fmt.Sprint("e", i, "-", j), Source: src, Host: fmt.Sprint("h", rng.IntN(5)), Time: at, Received: at, Message: "m"})
				}
				if err := b.PublishEvents(ctx, evs); err != nil {
					t.Fatal(err)
				}
			}
			review14Kills(ctx, t, rng, b, set, logger, engine.Lateness{AllowedLateness: 2 * time.Minute}, 5)
		})
	}
}

// The same past MaxHostWatermarks: a flood of new host names makes every
// watermark start over part way through an EVENTS message, among hosts
// seen again (some late).
func TestReview14RandomKillsAcrossMaxHostWatermarks(t *testing.T) {
	if testing.Short() {
		t.Skip("floods the gate")
	}
	defer func(v int64) { gateSnapshotMin = v }(gateSnapshotMin)
	for seed := range uint64(2) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 1414))
			gateSnapshotMin = []int64{1 << 20, 4 << 20}[seed%2]
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			b, set, logger := openVictimBus(ctx, t)
			base := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
			fresh := 0
			for i := range 14 {
				var evs []*event.Event
				for j := range 10_000 {
					at := base.Add(time.Duration(i)*time.Minute + time.Duration(rng.IntN(400)-300)*time.Second)
					host := fmt.Sprint("h", rng.IntN(20))
					if j%10 != 0 {
						host = fmt.Sprint("forged-", fresh)
						fresh++
					}
					evs = append(evs, &event.Event{ID: fmt.Sprint("e", i, "-", j), Source: "syslog", Host: host, Time: at, Received: at, Message: "m"})
				}
				if err := b.PublishEvents(ctx, evs); err != nil {
					t.Fatal(err)
				}
			}
			review14Kills(ctx, t, rng, b, set, logger, engine.Lateness{AllowedLateness: 2 * time.Minute}, 3)
		})
	}
}

// stopManySink is stopSink with one EVENTS message a batch and four
// batches in flight: their waits all return once the rule filter's
// context ended, the later ones called after it.
type stopManySink struct{ stopSink }

func (k *stopManySink) Consumer(cc bus.ConsumerConfig) bus.ConsumerConfig {
	cc.Batch, cc.InFlight = 1, 4
	return cc
}

// At a graceful stop, fused, the batches in flight are settled by the
// windows after the rule filter's context ended, and acked
// (TestGracefulStopAcksTheBatchesItSettles). Their wait also waits for
// the gate's records, durable long before: waited for on the ended
// context, a select between their ack and the context's end picks either,
// and a batch durable in every way fails and is handed again after the
// restart (evaluated again: TestRestartKeepsWindowState's "events
// evaluated again after a graceful restart").
func TestReview14GracefulStopAcksBatchesWithGateRecords(t *testing.T) {
	for attempt := range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		b, set, logger := openVictimBus(ctx, t)
		at := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
		for i := range 5 { // all handed: four in flight, the fifth waits for room
			ev := &event.Event{ID: fmt.Sprint("ev", i), Source: "syslog", Host: fmt.Sprint("h", i), Time: at, Received: at, Message: "m"}
			if err := b.PublishEvents(ctx, []*event.Event{ev}); err != nil {
				t.Fatal(err)
			}
		}
		s, err := New(b, set, engine.Lateness{AllowedLateness: 2 * time.Minute}, logger, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		sink := &stopManySink{stopSink{applied: make(chan struct{})}}
		s.Fuse(sink)
		stop := bustest.Run(ctx, t, s.Run)
		select {
		case <-sink.applied:
		case <-ctx.Done():
			t.Fatal("no batch handed")
		}
		time.Sleep(100 * time.Millisecond) // the other batches are handed
		stop()
		st, err := b.JetStream().Stream(ctx, bus.StreamEvents)
		if err != nil {
			t.Fatal(err)
		}
		var left uint64
		for range 50 {
			info, err := st.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if left = info.State.Msgs; left == 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if left != 0 {
			t.Fatalf("attempt %d: after a graceful stop that settled every batch handed, EVENTS holds %d messages not acked", attempt, left)
		}
	}
}

package window

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/state/statetest"
)

// Findings of an adversarial review of the state log (log.go), each
// reproduced by its test before its fix.

// A state larger than NATS's max_payload (1 MiB) once failed every
// checkpoint for good: a record now runs across messages wherever its
// bytes fall, so a state may span several.
func TestReviewHugeStateWedgesEveryCheckpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const distinctRule = `
  - {id: spray, title: T, kind: distinct, severity: 5, condition: 'host != ""', group_by: [host], field: user, threshold: 20, window: 10m}`
	h := newHarness(ctx, t, distinctRule+thresholdRule, nil)
	// 19 users of 60 KiB each (a syslog message is up to 65507 bytes by
	// default): one state of ~1.1 MiB.
	var ms []*event.Match
	for i := range 19 {
		m := match("spray", "attacker", fmt.Sprintf("e%d", i), t0.Add(time.Duration(i)*time.Second))
		m.Value = fmt.Sprintf("%02d", i) + strings.Repeat("x", 60<<10)
		ms = append(ms, m)
	}
	other := match("many", "victim", "v1", t0) // another rule, another key
	for try := range 3 {
		if _, err := h.apply(ctx, append(ms, other)...); err != nil {
			t.Fatal(err)
		}
		err := h.s.Checkpoint(ctx)
		t.Logf("try %d: checkpoint: %v", try, err)
		if err == nil {
			return // not reproduced
		}
		h.reset(ctx, t)
	}
	if h.stored(t, h.sk(t, "many", "victim")) == nil {
		t.Errorf("the unrelated state many/victim never became durable: the stage is wedged by one large state")
	}
}

// Two instances on one JetStream: A's compaction once purged B's records
// (and A read B's states). Each now has its own subject.
func TestReviewTwoInstancesShareOneStateLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := newCrashRun(t)
	a.tweak = func(c *Config) { c.StateLog.Memory = 1 } // compacts after every checkpoint
	b := &crashRun{t: t, db: statetest.Open(t), bus: a.bus, set: a.set, published: map[string]string{}}
	rekey := func(prefix string, batches [][]*event.Match) [][]*event.Match {
		for _, batch := range batches {
			for _, m := range batch {
				m.Key = "host=" + prefix + strings.TrimPrefix(m.Key, "host=")
			}
		}
		return batches
	}

	sb, stopB := b.stage(ctx, nil)
	drive(ctx, t, sb, rekey("b-", crashStream(7, 20)))
	stopB()
	wantB := b.states() // B's states as a restart of B reads them (log only: no compaction yet)
	if len(wantB) == 0 {
		t.Fatal("B holds no state")
	}

	sa, stopA := a.stage(ctx, nil)
	drive(ctx, t, sa, rekey("a-", crashStream(8, 10)))
	stopA()
	t.Logf("A compacted %v times", testutil.ToFloat64(sa.compactionsDone.WithLabelValues("ok")))

	gotB := b.states()
	lost := 0
	for k := range wantB {
		if _, ok := gotB[k]; !ok {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("B lost %d of its %d states to A's compaction (purge of the shared STATELOG)", lost, len(wantB))
	}
}

// Two resets waiting for one compaction (the deadline checks' and the
// consumer's): the second once forgot a batch applied and acked after the
// first. A reset now does nothing once another has run.
func TestReviewConcurrentResetsForgetAnAppliedBatch(t *testing.T) {
	lost := 0
	const trials = 30
	for trial := range trials {
		if reviewConcurrentResetTrial(t, trial) {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d trials: a batch applied and acked after Reset is not in the durable state", lost, trials)
	}
}

func reviewConcurrentResetTrial(t *testing.T, trial int) (lost bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var block atomic.Bool
	release := make(chan struct{})
	var once sync.Once
	rel := func() { once.Do(func() { close(release) }) }
	defer rel()
	h := newHarness(ctx, t, absenceRule+thresholdRule, func(c *Config) { c.StateLog.Memory = 1 })
	h.s.kill = func(step string) error {
		if step == "compact" && block.CompareAndSwap(true, false) {
			<-release // a long compaction (128 MiB of states into Badger)
		}
		return nil
	}
	h.commit(ctx, t, match("silent", "s", "s1", t0))
	wm := t0.Add(31 * time.Minute)
	h.setWatermark(t, wm)
	waitFor(ctx, t, "the first compaction done", func() bool {
		h.s.mu.Lock()
		defer h.s.mu.Unlock()
		return h.s.compactDone == nil
	})
	// The next checkpoint starts a compaction, which stays running.
	block.Store(true)
	h.commit(ctx, t, match("many", "warm", "w1", wm.Add(h.s.cfg.AllowedLateness)))
	waitFor(ctx, t, "a compaction blocked", func() bool { return !block.Load() })
	// A deadline check's alert is not acked: a failed epoch of deadline
	// checks only.
	h.pub.then(step{waitErr: errors.New("alert not acked")})
	if err := h.s.CheckDeadlines(ctx); err == nil {
		t.Fatal("CheckDeadlines did not fail")
	}
	// The timers' next check resets on its own... and waits for the compaction.
	timersReset := background(func() error { _, err := h.s.expire(ctx); return err })
	time.Sleep(50 * time.Millisecond)
	// The consumer hands m: refused (failed), so it will Reset and hand it again.
	late := wm.Add(h.s.cfg.AllowedLateness)
	m := match("many", "x", "x1", late.Add(time.Second))
	if w := h.mustApply(ctx, t, m); !errors.Is(recv(t, background(w), "m's wait"), errEarlierFailed) {
		t.Fatal("m was not refused")
	}
	consumer := background(func() error {
		if err := h.s.Reset(ctx); err != nil {
			return err
		}
		wait, err := h.apply(ctx, m)
		if err != nil {
			return err
		}
		if err := h.s.Checkpoint(ctx); err != nil {
			return err
		}
		return wait()
	})
	time.Sleep(50 * time.Millisecond)
	rel()
	cerr := recv(t, consumer, "the consumer")
	_ = recv(t, timersReset, "the timers' reset")
	if cerr != nil {
		return false // m failed: it will be handed again, nothing lost
	}
	_ = h.s.Checkpoint(ctx)
	// What a restart would read: with no compaction running (one reads
	// Badger's keyed states and the log at two instants).
	waitFor(ctx, t, "the compactions done", func() bool {
		h.s.mu.Lock()
		defer h.s.mu.Unlock()
		return h.s.compactDone == nil
	})
	if h.stored(t, h.sk(t, "many", "x")) == nil {
		t.Logf("trial %d: m acked (its wait returned nil) but many/x is not durable", trial)
		return true
	}
	return false
}

// STATELOG refusing appends (a limit, a full disk) once failed every
// checkpoint without ever trying the compaction that purges it.
func TestReviewRefusingStateLogWedgesWithoutCompacting(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, nil)
	for i := range 20 {
		h.commit(ctx, t, match("many", fmt.Sprintf("h%d", i), fmt.Sprintf("e%d", i), t0.Add(time.Duration(i)*time.Second)))
	}
	js := h.s.js
	stream, err := js.Stream(ctx, bus.StreamStateLog)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := stream.Info(ctx)
	cfg := info.Config
	cfg.MaxMsgs = int64(info.State.Msgs) // full: DiscardNew refuses the next append
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	for try := range 3 {
		if _, err := h.apply(ctx, match("many", "x", fmt.Sprintf("x%d", try), t0.Add(time.Minute))); err != nil {
			t.Fatal(err)
		}
		err := h.s.Checkpoint(ctx)
		h.reset(ctx, t) // reads the whole log again
		t.Logf("try %d: checkpoint %v", try, err)
		if err == nil {
			return
		}
	}
	if n := testutil.ToFloat64(h.s.compactionsDone.WithLabelValues("ok")) + testutil.ToFloat64(h.s.compactionsDone.WithLabelValues("failed")); n == 0 {
		t.Errorf("no compaction was ever tried while every checkpoint failed on a full STATELOG: wedged for good")
	}
}

// A message with a huge Outpost-Log-Seq once wrapped the next record's
// seq, so later records looked compacted and were skipped on restart.
func TestReviewHugeLogSeqMakesLaterRecordsLookCompacted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := newCrashRun(t)
	run.tweak = func(c *Config) { c.StateLog.Memory = 1 }
	s, stop := run.stage(ctx, nil)
	drive(ctx, t, s, crashStream(7, 10)) // some compactions: a mark > 0
	stop()
	m := newLogMsg(s.subject(), "18446744073709551615", nil)
	if _, err := run.bus.JetStream().PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	run.tweak = nil // no compaction from now on
	s2, stop2 := run.stage(ctx, nil)
	s2.mu.Lock()
	t.Logf("after the forged message: nextSeq %d, mark %d", s2.nextSeq, s2.logMark)
	s2.mu.Unlock()
	drive(ctx, t, s2, crashStream(9, 10))
	stop2()
	want := map[string]string{}
	s2.mu.Lock()
	for sk, st := range s2.logged {
		if st.enc != nil {
			want[sk] = string(st.enc)
		}
	}
	s2.mu.Unlock()
	got := run.states()
	diff := 0
	for k, v := range want {
		if got[k] != v {
			diff++
		}
	}
	if diff > 0 {
		t.Errorf("a restart reads %d of the %d states logged after the forged message wrong (older or missing)", diff, len(want))
	}
}

func newLogMsg(subject, seq string, data []byte) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Header.Set(logSeqHeader, seq)
	m.Header.Set(logPartHeader, "0/1")
	m.Data = data
	return m
}

// What a restart reads: 256 messages of 256 KiB (64 MiB of log; the
// default state_log.size is 1 GiB, four times as long).
func TestReviewLoadLogCost(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB of log")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	h := newHarness(ctx, t, thresholdRule, nil)
	js := h.s.js
	const n = 256
	rec := &logRecord{seq: 1, chunk: logChunk}
	enc := make([]byte, 200)
	for i := 0; len(rec.parts()) == 0 || len(rec.parts()[0]) < logChunk; i++ {
		rec.add(fmt.Sprintf("w/many@fp\x00host=h%07d", i), logState{enc: enc})
	}
	part := rec.parts()[0]
	for i := range n {
		if _, err := js.PublishMsgAsync(newLogMsg(h.s.subject(), fmt.Sprint(10+i), part)); err != nil {
			t.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	start := time.Now()
	if err := h.s.loadLog(ctx, false); err != nil {
		t.Fatal(err)
	}
	t.Logf("loadLog of %d messages: %s, %d states", n, time.Since(start), len(h.s.logged))
	if len(h.s.logged) == 0 {
		t.Fatal("nothing read")
	}
}

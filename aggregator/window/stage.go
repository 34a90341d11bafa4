// Package window is the stateful stage: it consumes MATCHES, applies them
// with the engine's window logic (aggregator/engine: Windows, Watermark)
// to each (rule, group key)'s state, kept in Badger in event time, and
// publishes an alert to ALERTS when a rule's condition holds. It is the
// adapter and the Badger store: decode, apply, publish, commit, ack; the
// semantics are the engine's.
//
// Per batch of matches, in this order, which is what makes a crash at any
// point safe:
//
//  1. apply every match to its group state, in memory;
//  2. publish the alerts, each with its deterministic id as Nats-Msg-Id;
//  3. once JetStream acked every alert, commit the states to Badger;
//  4. once committed, ack the matches.
//
// A crash before 3 redelivers the batch: the same states give the same
// alerts with the same ids, which JetStream's duplicate window drops. A crash
// between 3 and 4 redelivers matches the state already holds; apply treats
// them as duplicates.
//
// Steps 3 and 4 of one batch overlap step 1 of the next (bus.ConsumeAsync):
// one committer goroutine waits for each batch's alert acks and commits
// batches in order, while the stage applies the next batch on top of the
// states still being committed (layers). If a commit fails, every batch
// after it fails too and both are applied again from what Badger holds.
//
// The watermark (engine.Watermark) moves only when a batch is committed,
// by the newest event time the rule filter had admitted before the
// matches it holds (bus.HeaderWatermark): a batch that fails never moved
// it, and after a crash it starts from the mark committed with the last
// batch.
package window

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/state"
	"github.com/outpost-siem/outpost/rules"
)

// Stage is the windows stage: the JetStream adapter around the engine's
// window logic over the Badger store (store.go, batch.go): decode, apply,
// publish, commit, ack.
type Stage struct {
	cfg     Config
	bus     *bus.Bus
	rules   atomic.Pointer[rules.Set]
	log     *slog.Logger
	now     func() time.Time // the wall clock; tests inject their own
	windows *engine.Windows
	// publish sends a batch's alerts without waiting for their acks; wait
	// collects them. JetStream's (publishAlerts) unless a test injects one.
	publish func(alerts []*event.Alert) (wait func(context.Context) error, err error)

	// mu serializes batches and deadline checks, and every use of the
	// store; wm is the watermark (engine.Watermark: newest event time,
	// idle advance on now). jobs hands the layers to the committer.
	mu sync.Mutex
	wm *engine.Watermark
	*store
	jobs chan *layer

	verdicts *prometheus.CounterVec
	keyCap   *prometheus.CounterVec
	alerts   prometheus.Counter
	unknown  prometheus.Counter
}

// New returns the stage and registers its metrics on reg. cfg must have
// been validated.
func New(cfg Config, b *bus.Bus, db *state.DB, set *rules.Set, logger *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Stage, error) {
	log := logger.With("component", "windows")
	s := &Stage{
		cfg: cfg, bus: b, store: newStore(cfg, db, log), jobs: make(chan *layer, 4), now: time.Now,
		windows: engine.NewWindows(cfg.Lateness),
		log:     log,
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_windows_matches_total",
			Help: "Matches applied to window state, by what became of them (counted, fired, suppressed, duplicate).",
		}, []string{"verdict"}),
		keyCap: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_windows_key_cap_hits_total",
			Help: "Matches dropped because their rule had windows.max_keys_per_rule live group keys, by rule.",
		}, []string{"rule"}),
		alerts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_alerts_raised_total",
			Help: "Alerts published to ALERTS.",
		}),
		unknown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_windows_unknown_rule_matches_total",
			Help: "Matches for a rule no longer loaded (removed or disabled); dropped.",
		}),
	}
	s.publish = s.publishAlerts
	for _, o := range opts {
		o(s)
	}
	s.wm = engine.NewWatermark(cfg.AllowedLateness, cfg.IdleAdvance, func() time.Time { return s.now() })
	s.rules.Store(set)
	live := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "outpost_windows_live_keys",
		Help: "Group keys with window state in Badger, all rules (recounted every 10 minutes; keys expired by TTL meanwhile still count).",
	}, func() float64 { return float64(s.keysTotal.Load()) })
	for _, c := range []prometheus.Collector{s.verdicts, s.keyCap, s.alerts, s.unknown, live} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering the windows metrics: %w", err)
		}
	}
	return s, nil
}

// SetRules swaps the rule set; state of rules that keep their id is kept.
func (s *Stage) SetRules(set *rules.Set) { s.rules.Store(set) }

// Run consumes MATCHES and checks absence deadlines until ctx ends.
func (s *Stage) Run(ctx context.Context) error {
	if err := s.loadWatermark(); err != nil {
		return err
	}
	s.mu.Lock()
	err := s.countKeys()
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("counting window state keys: %w", err)
	}
	tctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // the committer's last commit ends before the DB may close
	defer cancel()
	wg.Go(func() { s.runCommitter(tctx) })
	wg.Go(func() { s.runTimers(tctx) })
	return s.bus.ConsumeAsync(ctx, bus.ConsumerConfig{
		Stream:  bus.StreamMatches,
		Durable: "outpost-windows",
		// Each touched key's state is rewritten once per batch, so batches
		// are sized in bytes: the filter's many small messages (one per
		// partition per batch of events) make as large a batch as full ones.
		Batch:      512,
		BatchBytes: 4 << 20,
	}, s.log, s.handle)
}

var verdictNames = [...]string{engine.Counted: "counted", engine.Fired: "fired", engine.Suppressed: "suppressed", engine.Duplicate: "duplicate"}

// errEarlierFailed fails a batch applied on top of one whose commit failed.
var errEarlierFailed = errors.New("an earlier batch's commit failed")

// layer is one applied batch on its way to Badger.
type layer struct {
	b       *batch
	maxTime int64                       // newest event time once committed (the watermark's)
	arrived time.Time                   // the clock when it was applied
	wait    func(context.Context) error // the alerts' acks
	done    chan struct{}               // closed when committed or failed
	err     error
}

// handle decodes a batch of MATCHES messages and applies it. The batch
// moves the watermark to the newest event time its messages' headers
// carry (bus.HeaderWatermark), or, for a message without one, to its
// matches' times.
func (s *Stage) handle(ctx context.Context, msgs []jetstream.Msg) (func() error, error) {
	return s.apply(ctx, func(each func(*event.Match) error) (int64, error) {
		var newest int64
		for _, msg := range msgs {
			byHeader := false
			if v := msg.Headers().Get(bus.HeaderWatermark); v != "" {
				if wm, err := strconv.ParseInt(v, 10, 64); err == nil {
					newest, byHeader = max(newest, wm), true
				}
			}
			err := bus.DecodeMatches(msg.Data(), func(m *event.Match) error {
				if !byHeader {
					newest = max(newest, m.At().UnixNano())
				}
				return each(m)
			}, func(rec []byte, err error) error {
				// Not ours to fix: the filter wrote it. Keep it for a human.
				s.deadLetter(ctx, rec, err)
				return nil
			})
			if err != nil {
				return 0, err
			}
		}
		return newest, nil
	})
}

// apply applies the matches decode yields to their states (steps 1 and 2
// of the contract above) and queues the batch for the committer; decode
// returns the newest event time the batch lets the watermark move to. The
// func apply returns waits for the commit (steps 3 and 4 are the caller's
// ack).
func (s *Stage) apply(ctx context.Context, decode func(each func(*event.Match) error) (newest int64, err error)) (func() error, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.resetAfterFailure(ctx); err != nil {
		return nil, err
	}
	set := s.rules.Load()
	b := s.newBatch()
	var alerts []*event.Alert
	newest, err := decode(func(m *event.Match) error {
		r := set.Rule(m.RuleID)
		if r == nil {
			b.unknown++
			return nil
		}
		res, err := s.windows.Apply(b, r, m)
		if err != nil {
			return err
		}
		if res.Capped {
			b.keyCapHit(r.ID)
		}
		if res.Dropped {
			return nil
		}
		b.verdicts[res.Verdict]++
		if res.Alert != nil {
			alerts = append(alerts, res.Alert)
		}
		return nil
	})
	if err != nil {
		b.txn.Discard()
		return nil, err
	}
	l, err := s.submit(ctx, b, alerts, max(s.newestApplied(), newest))
	if err != nil {
		return nil, err
	}
	return func() error { return s.settle(ctx, l) }, nil
}

// newestApplied is the newest event time of the batches applied so far,
// committed or not: what the next layer's mark starts from. The watermark
// itself moves only with commits (popCommitted), so a batch that fails
// never moves it.
func (s *Stage) newestApplied() int64 {
	if n := len(s.layers); n > 0 {
		return max(s.wm.Max(), s.layers[n-1].maxTime)
	}
	return s.wm.Max()
}

// submit publishes a batch's alerts (without waiting for their acks),
// makes its states a layer and queues it for the committer.
func (s *Stage) submit(ctx context.Context, b *batch, alerts []*event.Alert, maxTime int64) (*layer, error) {
	wait, err := s.publish(alerts)
	if err != nil {
		b.txn.Discard()
		return nil, err
	}
	b.account()
	l := &layer{b: b, maxTime: maxTime, arrived: s.now(), wait: wait, done: make(chan struct{})}
	s.layers = append(s.layers, l)
	select {
	case s.jobs <- l:
		return l, nil
	case <-ctx.Done():
		s.layers = s.layers[:len(s.layers)-1] // never queued: nothing will settle it
		b.txn.Discard()
		return nil, ctx.Err()
	}
}

// settle waits until l is committed (or failed), then moves the committed
// layers into the cache.
func (s *Stage) settle(ctx context.Context, l *layer) error {
	select {
	case <-l.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.popCommitted()
	return l.err
}

// popCommitted moves the committed layers into the cache, and the
// watermark on by what they brought.
func (s *Stage) popCommitted() { s.settleCommitted(s.committed) }

// resetAfterFailure, after a failed commit, lets the next batch apply on
// what Badger holds (store.reset).
func (s *Stage) resetAfterFailure(ctx context.Context) error { return s.reset(ctx, s.committed) }

// committed moves the watermark on by a committed layer's newest event
// time, idle time counting from when the layer was applied.
func (s *Stage) committed(l *layer) { s.wm.ObserveAt(l.maxTime, l.arrived) }

// runCommitter commits the queued layers in order: each once its alerts
// are acked. After a failure it fails every layer until resetAfterFailure.
func (s *Stage) runCommitter(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case l := <-s.jobs:
			err := errEarlierFailed
			if !s.failed.Load() {
				err = l.wait(ctx)
				if err == nil {
					err = l.b.write(l.maxTime)
				}
			}
			l.b.txn.Discard() // the txn in hand: writes may have split it
			if err != nil {
				s.failed.Store(true)
			} else {
				s.count(l.b) // counted once, when durable: a retried batch is not counted twice
			}
			l.err = err
			close(l.done)
		}
	}
}

// Watermark is the stage's engine.Watermark now. Call with mu held.
func (s *Stage) Watermark() int64 { return s.wm.At() }

// CheckDeadlines fires every absence deadline the watermark has passed
// now, and returns once their alerts are acked and the states committed.
// Run does this every second; a test calls it to know it happened.
func (s *Stage) CheckDeadlines(ctx context.Context) error {
	for {
		n, err := s.expire(ctx)
		if err != nil || n < expireLimit {
			return err
		}
	}
}

// expireLimit is how many deadlines one expire looks at.
const expireLimit = 1000

// expire fires the absence rules whose deadline the watermark passed, up
// to expireLimit of them, and says how many it looked at.
func (s *Stage) expire(ctx context.Context) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.resetAfterFailure(ctx); err != nil {
		return 0, err
	}
	set := s.rules.Load()
	b := s.newBatch()
	var alerts []*event.Alert
	n, err := s.windows.FireDue(b, set.Rule, s.wm.At(), expireLimit, func(_ *rules.Rule, _ engine.Deadline, a *event.Alert, v engine.Verdict) {
		b.verdicts[v]++
		if a != nil {
			alerts = append(alerts, a)
		}
	})
	if err != nil || (n == 0 && len(b.drops) == 0) {
		b.txn.Discard()
		return n, err
	}
	l, err := s.submit(ctx, b, alerts, s.newestApplied())
	if err != nil {
		return n, err
	}
	// Wait here, holding mu: the committer needs no lock, and batches
	// queued before this one are committed first.
	select {
	case <-l.done:
	case <-ctx.Done():
		return n, ctx.Err()
	}
	s.popCommitted()
	return n, l.err
}

func (s *Stage) runTimers(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	recount := time.NewTicker(10 * time.Minute)
	defer recount.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-recount.C:
			s.mu.Lock()
			if err := s.countKeys(); err != nil {
				s.log.Warn("counting window state keys failed", "err", err)
			}
			s.mu.Unlock()
		case <-t.C:
			if _, err := s.expire(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("checking absence deadlines failed; will retry", "err", err)
			}
		}
	}
}

// publishAlerts sends alerts to ALERTS without waiting for their acks.
// The alert id is the Nats-Msg-Id, so a replay within the stream's
// duplicate window is dropped by JetStream itself.
func (s *Stage) publishAlerts(alerts []*event.Alert) (func(context.Context) error, error) {
	if len(alerts) == 0 {
		return func(context.Context) error { return nil }, nil
	}
	js := s.bus.JetStream()
	futures := make([]jetstream.PubAckFuture, 0, len(alerts))
	for _, a := range alerts {
		data, err := json.Marshal(a)
		if err != nil {
			return nil, err
		}
		m := nats.NewMsg("alerts." + SeverityName(a.Severity))
		m.Header.Set(jetstream.MsgIDHeader, a.ID)
		m.Data = data
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return nil, fmt.Errorf("publishing alert %s: %w", a.ID, err)
		}
		futures = append(futures, f)
	}
	return func(ctx context.Context) error { return s.awaitAlerts(ctx, futures) }, nil
}

// count adds a committed batch's verdicts to the metrics.
func (s *Stage) count(b *batch) {
	for v, n := range b.verdicts {
		if n > 0 {
			s.verdicts.WithLabelValues(verdictNames[v]).Add(float64(n))
		}
	}
	if b.unknown > 0 {
		s.unknown.Add(float64(b.unknown))
	}
	for rule, n := range b.keyCaps {
		s.keyCap.WithLabelValues(rule).Add(float64(n))
	}
}

// awaitAlerts waits for every alert's ack.
func (s *Stage) awaitAlerts(ctx context.Context, futures []jetstream.PubAckFuture) error {
	for _, f := range futures {
		select {
		case ack := <-f.Ok():
			if !ack.Duplicate {
				s.alerts.Inc()
			}
		case err := <-f.Err():
			return fmt.Errorf("publishing alert: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (s *Stage) deadLetter(ctx context.Context, line []byte, cause error) {
	if err := s.bus.DeadLetter(ctx, "windows", cause.Error(), line, ""); err != nil {
		s.log.Error("dead-lettering an unreadable message failed", "err", err)
	}
}

// SeverityName buckets CEF's 0-10 severity as CEF does: 0-3 low, 4-6
// medium, 7-8 high, 9-10 critical. It names the ALERTS subject.
func SeverityName(sev int) string {
	switch {
	case sev >= 9:
		return "critical"
	case sev >= 7:
		return "high"
	case sev >= 4:
		return "medium"
	default:
		return "low"
	}
}

// Package window is the stateful stage: it consumes MATCHES, keeps each
// (rule, group key)'s window in Badger, in event time, and publishes an
// alert to ALERTS when a rule's condition holds.
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
package window

import (
	"context"
	"errors"
	"fmt"
	json "github.com/goccy/go-json"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/config"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/state"
	"github.com/outpost-siem/outpost/rules"
)

// Config is the `windows` section of outpost.yaml.
type Config struct {
	// AllowedLateness is how far behind the newest event of its source an
	// event may arrive and still count; older events are counted and
	// dead-lettered by the rule filter. It also keeps events in a window's
	// state this long past the window, and holds back absence deadlines.
	AllowedLateness time.Duration `yaml:"allowed_lateness"`
	// SourceLateness overrides AllowedLateness per event source; a key
	// ending in ".*" matches every source with that prefix. Default:
	// {"azure.*": 2h}, because Azure files its exports by receive time and
	// a blob can carry records an hour old.
	SourceLateness map[string]time.Duration `yaml:"source_lateness"`
	// StateGrace is added to every state key's TTL (window + lateness, or
	// suppress) so a backlog replayed after downtime still finds its state.
	StateGrace time.Duration `yaml:"state_grace"`
	// IdleAdvance: when no newer match arrived for this long, the watermark
	// catches up with the wall clock minus AllowedLateness and follows it
	// (absence rules need time to pass even when every source is silent).
	IdleAdvance time.Duration `yaml:"idle_advance"`
	// MaxKeysPerRule caps the live group keys of one rule; matches for new
	// keys beyond it are dropped and counted
	// (outpost_windows_key_cap_hits_total), which bounds the state a flood
	// of distinct addresses can create.
	MaxKeysPerRule int `yaml:"max_keys_per_rule"`
	// CacheKeys is how many recently used window states are kept in memory
	// in front of Badger. Default 100,000.
	CacheKeys int `yaml:"cache_keys"`
}

// Validate applies defaults.
func (c *Config) Validate() error {
	if c.AllowedLateness == 0 {
		c.AllowedLateness = 2 * time.Minute
	}
	if c.SourceLateness == nil {
		c.SourceLateness = map[string]time.Duration{"azure.*": 2 * time.Hour}
	}
	if c.StateGrace == 0 {
		c.StateGrace = time.Hour
	}
	if c.IdleAdvance == 0 {
		c.IdleAdvance = 5 * time.Minute
	}
	if c.MaxKeysPerRule == 0 {
		c.MaxKeysPerRule = 1_000_000
	}
	if c.CacheKeys == 0 {
		c.CacheKeys = 100_000
	}
	var errs config.Errors
	if c.AllowedLateness < 0 || c.StateGrace < 0 || c.IdleAdvance < 0 {
		errs.Addf("windows.allowed_lateness, windows.state_grace and windows.idle_advance must not be negative")
	}
	for k, d := range c.SourceLateness {
		if d < 0 {
			errs.Addf("windows.source_lateness.%s: must not be negative", k)
		}
	}
	if c.CacheKeys < 0 {
		errs.Addf("windows.cache_keys: must be positive")
	}
	if c.MaxKeysPerRule < 0 {
		errs.Addf("windows.max_keys_per_rule: must be positive")
	}
	return errs.Err()
}

// LatenessFor returns the allowed lateness of events from source.
func (c *Config) LatenessFor(source string) time.Duration {
	if d, ok := c.SourceLateness[source]; ok {
		return d
	}
	best, d := -1, c.AllowedLateness
	for k, v := range c.SourceLateness {
		if prefix, ok := strings.CutSuffix(k, "*"); ok && strings.HasPrefix(source, prefix) && len(prefix) > best {
			best, d = len(prefix), v
		}
	}
	return d
}

// MaxLateness is the largest allowed lateness of any source: how long an
// event stays in a window's state past the window.
func (c *Config) MaxLateness() time.Duration {
	d := c.AllowedLateness
	for _, v := range c.SourceLateness {
		d = max(d, v)
	}
	return d
}

// Stage is the windows stage.
type Stage struct {
	cfg   Config
	bus   *bus.Bus
	db    *state.DB
	rules atomic.Pointer[rules.Set]
	log   *slog.Logger
	now   func() time.Time // the wall clock; tests inject their own

	// mu serializes batches and deadline checks; maxTime (newest match
	// event time, unix ns) and lastAdvance (wall time it last grew) make the
	// watermark.
	mu          sync.Mutex
	maxTime     int64
	lastAdvance time.Time
	liveKeys    map[string]int // live group keys per rule id (see countKeys)
	keysTotal   atomic.Int64   // their sum, for the gauge (read without mu)
	// cache holds recently used committed states in front of Badger, so a
	// hot key is not read and decoded on every batch. A state enters it only
	// after its commit.
	cache *lru.Cache[string, *State]
	// layers are the batches applied in memory whose commit is not known
	// to have succeeded, oldest first; their states shadow the cache and
	// Badger. jobs hands them to the committer; failed is set by it when a
	// commit failed, and cleared by resetAfterFailure.
	layers []*layer
	jobs   chan *layer
	failed atomic.Bool

	verdicts *prometheus.CounterVec
	keyCap   *prometheus.CounterVec
	alerts   prometheus.Counter
	unknown  prometheus.Counter
}

// New returns the stage. cfg must have been validated.
func New(cfg Config, b *bus.Bus, db *state.DB, set *rules.Set, logger *slog.Logger, reg prometheus.Registerer) *Stage {
	cache, _ := lru.New[string, *State](max(cfg.CacheKeys, 1)) // errs only for a size < 1
	s := &Stage{
		cfg: cfg, bus: b, db: db, cache: cache, jobs: make(chan *layer, 4), now: time.Now,
		log: logger.With("component", "windows"),
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
	s.rules.Store(set)
	live := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "outpost_windows_live_keys",
		Help: "Group keys with window state in Badger, all rules (recounted every 10 minutes; keys expired by TTL meanwhile still count).",
	}, func() float64 { return float64(s.keysTotal.Load()) })
	reg.MustRegister(s.verdicts, s.keyCap, s.alerts, s.unknown, live)
	return s
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
	go s.runTimers(tctx)
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

var verdictNames = [...]string{Counted: "counted", Fired: "fired", Suppressed: "suppressed", Duplicate: "duplicate"}

// errEarlierFailed fails a batch applied on top of one whose commit failed.
var errEarlierFailed = errors.New("an earlier batch's commit failed")

// layer is one applied batch on its way to Badger.
type layer struct {
	b       *batch
	maxTime int64
	alerts  []jetstream.PubAckFuture
	done    chan struct{} // closed when committed or failed
	err     error
}

func (s *Stage) handle(ctx context.Context, msgs []jetstream.Msg) (func() error, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.resetAfterFailure(ctx); err != nil {
		return nil, err
	}
	set := s.rules.Load()
	b := s.newBatch()
	var alerts []*event.Alert
	maxTime := s.maxTime
	for _, msg := range msgs {
		err := bus.DecodeMatches(msg.Data(), func(m *event.Match) error {
			maxTime = max(maxTime, m.At().UnixNano()) // where Apply places it
			r := set.Rule(m.RuleID)
			if r == nil {
				b.unknown++
				return nil
			}
			st := &State{}
			if !Stateless(r) {
				var err error
				st, err = b.load(r, m.Key)
				if errors.Is(err, errKeyCap) {
					b.keyCapHit(r.ID)
					if r.Kind != rules.KindMatch {
						return nil
					}
					// A match rule fails open: flooding keys must not blind
					// it; it alerts without its suppression state.
					st = &State{}
				} else if err != nil {
					return err
				}
			}
			a, v := Apply(r, st, m, s.cfg.MaxLateness())
			b.verdicts[v]++
			if a != nil {
				alerts = append(alerts, a)
			}
			return nil
		}, func(rec []byte, err error) error {
			// Not ours to fix: the filter wrote it. Keep it for a human.
			s.deadLetter(ctx, rec, err)
			return nil
		})
		if err != nil {
			b.txn.Discard()
			return nil, err
		}
	}
	l, err := s.submit(ctx, b, alerts, maxTime)
	if err != nil {
		return nil, err
	}
	if maxTime > s.maxTime {
		s.maxTime, s.lastAdvance = maxTime, s.now()
	}
	return func() error { return s.settle(ctx, l) }, nil
}

// submit publishes a batch's alerts (without waiting for their acks),
// makes its states a layer and queues it for the committer.
func (s *Stage) submit(ctx context.Context, b *batch, alerts []*event.Alert, maxTime int64) (*layer, error) {
	futures, err := s.publish(alerts)
	if err != nil {
		b.txn.Discard()
		return nil, err
	}
	b.account()
	l := &layer{b: b, maxTime: maxTime, alerts: futures, done: make(chan struct{})}
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

// popCommitted moves the oldest layers, as long as they committed, into
// the cache.
func (s *Stage) popCommitted() {
	for len(s.layers) > 0 {
		l := s.layers[0]
		select {
		case <-l.done:
		default:
			return
		}
		if l.err != nil {
			return // resetAfterFailure drops it
		}
		for _, sk := range l.b.order {
			if st := l.b.states[sk].st; st.Empty() {
				s.cache.Remove(sk)
			} else {
				s.cache.Add(sk, st)
			}
		}
		s.layers[0] = nil
		s.layers = s.layers[1:]
	}
}

// resetAfterFailure, after a failed commit, waits for every layer to be done with
// (the committer fails them all), drops them and recounts the keys, so the
// next batch applies its matches to what Badger holds.
func (s *Stage) resetAfterFailure(ctx context.Context) error {
	if !s.failed.Load() {
		return nil
	}
	for _, l := range s.layers {
		select {
		case <-l.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.layers = nil
	s.failed.Store(false)
	return s.countKeys()
}

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
				err = s.awaitAlerts(ctx, l.alerts)
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

// Watermark is the event time up to which the stage takes its input as
// complete: the newest event time seen (each capped at its reception)
// minus the allowed lateness. Once no newer match has arrived for longer
// than IdleAdvance, it catches up with the wall clock minus the allowed
// lateness and follows it, so an absence rule still fires when every
// source went silent, and a backlog's silences fire IdleAdvance after it
// was read rather than `for` after its last event. It never passes the
// wall clock minus the allowed lateness by itself: only what a match's
// reception allows.
func (s *Stage) Watermark() int64 {
	if s.maxTime == 0 {
		return 0
	}
	w := s.maxTime - int64(s.cfg.AllowedLateness)
	if now := s.now(); now.Sub(s.lastAdvance) > s.cfg.IdleAdvance {
		w = max(w, now.UnixNano()-int64(s.cfg.AllowedLateness))
	}
	return w
}

// expire fires the absence rules whose deadline the watermark passed.
func (s *Stage) expire(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.resetAfterFailure(ctx); err != nil {
		return err
	}
	wm := s.Watermark()
	if wm == 0 {
		return nil
	}
	set := s.rules.Load()
	b := s.newBatch()
	due, err := b.dueTimers(wm, 1000)
	if err != nil || len(due) == 0 {
		b.txn.Discard()
		return err
	}
	var alerts []*event.Alert
	for _, d := range due {
		r := set.Rule(d.rule)
		if r == nil || r.Fingerprint != d.fingerprint {
			b.dropTimer(d.timerKey) // the rule changed or went away
			continue
		}
		st, err := b.loadState(r, d.key, false)
		if err != nil {
			b.txn.Discard()
			return err
		}
		if st.Deadline != d.deadline {
			// Stale: the deadline moved, or the state expired by TTL
			// while its timer stayed.
			b.dropTimer(d.timerKey)
			continue
		}
		a, v := Expire(r, st, d.key, wm)
		if v != Counted {
			b.verdicts[v]++
		}
		if a != nil {
			alerts = append(alerts, a)
		}
	}
	l, err := s.submit(ctx, b, alerts, s.maxTime)
	if err != nil {
		return err
	}
	// Wait here, holding mu: the committer needs no lock, and batches
	// queued before this one are committed first.
	select {
	case <-l.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.popCommitted()
	return l.err
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
			if err := s.expire(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("checking absence deadlines failed; will retry", "err", err)
			}
		}
	}
}

// publish sends alerts without waiting for their acks. The alert id is
// the Nats-Msg-Id, so a replay within the stream's duplicate window is
// dropped by JetStream itself.
func (s *Stage) publish(alerts []*event.Alert) ([]jetstream.PubAckFuture, error) {
	if len(alerts) == 0 {
		return nil, nil
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
	return futures, nil
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

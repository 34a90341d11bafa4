// Package window is the stateful stage: it consumes MATCHES, applies them
// with the engine's window logic (aggregator/engine: Windows, Watermark)
// to each (rule, group key)'s state, kept in memory and checkpointed to
// the state log and Badger, in event time, and publishes an alert to
// ALERTS when a rule's condition holds. It is the adapter and the store:
// decode, apply, publish, checkpoint, ack; the semantics are the engine's.
//
// State is checkpointed, the way stream processors keep keyed state: the
// matches change the states in memory, and every checkpoint_interval (or
// sooner, when many states changed) one checkpoint makes what changed since
// the last one durable together. In this order, which is what makes a
// crash at any point safe:
//
//  1. apply every match to its group state, in memory;
//  2. publish the alerts, each with its deterministic id as Nats-Msg-Id;
//  3. seal: the batches applied so far form an epoch; the states they
//     changed are encoded as they are now;
//  4. once JetStream acked every alert of the epoch, write the timer index
//     of its armed states to Badger, append the states to the state log
//     (log.go: STATELOG) with the positions of the messages they hold
//     (applied.go), delete the old timer keys, then write the watermark
//     mark;
//  5. once written, ack the epoch's matches.
//
// What is stored of the states is Badger's keyed states overlaid by the
// state log: a compaction moves the log into Badger (log.go). A crash
// before the state log holds the whole record redelivers every match since
// the last checkpoint: applied to the states of that checkpoint, they give
// the same alerts with the same ids, which JetStream's duplicate window
// drops (the mark is written last, so a watermark never runs ahead of the
// states). A crash after that redelivers messages the states already
// hold: the stage skips each by its position in MATCHES, which the record
// carries (applied.go), since applying a match twice is not always a
// no-op (an at_most window's dropped match, a distinct rule's absorbed
// repeat, an absence match past its deadline leave no trace in the
// state). The rule filter, killed after it published a batch's matches
// and before it acked its events, publishes them again at new MATCHES
// positions: the stage skips those by the position of the EVENTS message
// they come from (bus.HeaderSource), which the record carries too, per
// partition (fused with the rule filter, the filter hands them with the
// matches: one account for all partitions). A failure (an alert not
// acked, a write that failed) is a crash in miniature: the states in
// memory are dropped, and every match since the last checkpoint is
// applied again, in order, to what is stored (bus.ConsumeAsync hands them
// again).
//
// The watermark (engine.Watermark) moves only when a checkpoint is
// durable, by the newest event time the rule filter had admitted before
// the matches of its epoch (bus.HeaderWatermark): an epoch that fails
// never moved it, and after a crash it starts from the mark of the last
// checkpoint. The absence deadlines it passes are found in the timer index
// of the durable checkpoints, which holds every deadline armed before it.
package window

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
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
// window logic over the checkpointed store (store.go, batch.go,
// checkpoint.go): decode, apply, publish, checkpoint, ack.
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

	// mu serializes batches, deadline checks and seals, and every use of
	// the store; wm is the watermark (engine.Watermark: newest event time,
	// idle advance on now). cur is the epoch batches are applied to,
	// writing the one being checkpointed (nil if none). sealNow asks the
	// checkpointer for a checkpoint; checkpointed tells the timers one is
	// durable. stopped is set once the checkpointer has ended: an epoch
	// begun after that never becomes durable.
	mu           sync.Mutex
	wm           *engine.Watermark
	cur, writing *epoch
	stopped      bool
	// toHandAgain counts the consumers' batches of the epochs failed since
	// the last Reset: while there are any, their consumer resets.
	toHandAgain int
	*store
	sealNow      chan struct{}
	checkpointed chan struct{}
	fusedq       chan *fusedBatch // Apply to runFused: one batch ahead
	fusedDone    chan struct{}    // closed when runFused has ended
	// matchesLeft is the last MATCHES message when the stage started (0:
	// none): runFused applies nothing before the states durably hold it.
	matchesLeft uint64
	// kill, in tests, is called at each step of a checkpoint (checkpoint.go:
	// step); an error stops the stage there as kill -9 would, and closes
	// dead.
	kill   func(step string) error
	killed atomic.Bool
	dead   chan struct{}

	verdicts    *prometheus.CounterVec
	deadlines   *prometheus.CounterVec
	keyCap      *prometheus.CounterVec
	alerts      *prometheus.CounterVec
	unknown     prometheus.Counter
	redelivered prometheus.Counter
	republished prometheus.Counter
	checkpoints *prometheus.CounterVec
	cpSeconds   prometheus.Histogram
	cpStates    prometheus.Histogram
	// compactions runs the state log's compactions (log.go), one at a time.
	compactions     sync.WaitGroup
	compactionsDone *prometheus.CounterVec
	compactSeconds  prometheus.Histogram
}

// New returns the stage and registers its metrics on reg. cfg must have
// been validated.
func New(cfg Config, b *bus.Bus, db *state.DB, set *rules.Set, logger *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Stage, error) {
	log := logger.With("component", "windows")
	s := &Stage{
		cfg: cfg, bus: b, store: newStore(cfg, db, b.JetStream(), log), now: time.Now,
		sealNow: make(chan struct{}, 1), checkpointed: make(chan struct{}, 1), dead: make(chan struct{}), fusedq: make(chan *fusedBatch, 1), fusedDone: make(chan struct{}),
		windows: engine.NewWindows(cfg.Lateness),
		log:     log,
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_windows_matches_total",
			Help: "Matches applied to window state, by what became of them (counted, fired, suppressed, duplicate); counted once checkpointed.",
		}, []string{"verdict"}),
		deadlines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_windows_deadlines_total",
			Help: "Absence deadlines the watermark passed, by what became of them (fired, suppressed, ...); counted once checkpointed. Not matches: outpost_windows_matches_total counts those.",
		}, []string{"verdict"}),
		keyCap: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_windows_key_cap_hits_total",
			Help: "Matches dropped because their rule had windows.max_keys_per_rule live group keys, by rule.",
		}, []string{"rule"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_alerts_raised_total",
			Help: "Alerts published to ALERTS, by rule.",
		}, []string{"rule"}),
		unknown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_windows_unknown_rule_matches_total",
			Help: "Matches for a rule no longer loaded (removed or disabled); dropped.",
		}),
		redelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_windows_redelivered_messages_total",
			Help: "Messages handed again (after a crash, or an ack timeout) whose matches the window state already held; skipped. Counted once checkpointed.",
		}),
		republished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_windows_republished_matches_total",
			Help: "Matches published again by a rule filter handed their events again (after a crash) that the window state already held, recognised by the EVENTS message they come from; skipped. Counted once checkpointed.",
		}),
		checkpoints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_windows_checkpoints_total",
			Help: "Checkpoints of window state (the state log and Badger), by result (ok, failed).",
		}, []string{"result"}),
		cpSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outpost_windows_checkpoint_seconds",
			Help:    "Time from sealing a checkpoint to its being durable (the alerts' acks, then the state log's append and the Badger write).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		cpStates: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outpost_windows_checkpoint_states",
			Help:    "States written (or deleted) by one checkpoint.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 11),
		}),
		compactionsDone: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_windows_state_log_compactions_total",
			Help: "Compactions of the window state log into Badger's keyed states, by result (ok, failed).",
		}, []string{"result"}),
		compactSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outpost_windows_state_log_compaction_seconds",
			Help:    "Time a compaction of the window state log took.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}),
	}
	s.publish = s.publishAlerts
	for _, o := range opts {
		o(s)
	}
	s.cur = newEpoch(s.now())
	s.wm = engine.NewWatermark(cfg.AllowedLateness, cfg.IdleAdvance, func() time.Time { return s.now() })
	s.rules.Store(set)
	live := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "outpost_windows_live_keys",
		Help: "Group keys with window state, all rules (recounted every 10 minutes; keys expired by TTL meanwhile still count).",
	}, func() float64 { return float64(s.keysTotal.Load()) })
	coldBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "outpost_windows_cold_bytes",
		Help: "Memory (estimated) of the window states kept encoded behind the cache (windows.cold_cache_size bounds it).",
	}, func() float64 { return float64(s.coldBytes.Load()) })
	logBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "outpost_windows_state_log_bytes",
		Help: "Memory (estimated) of the window states logged since the last compaction (windows.state_log.memory starts one).",
	}, func() float64 { return float64(s.logBytes.Load()) })
	var reads []prometheus.Collector
	for form, n := range map[string]func() int64{
		"decoded": func() int64 { return s.memN.Load() - s.encodedN.Load() },
		"encoded": s.encodedN.Load,
	} {
		reads = append(reads, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outpost_windows_states_in_memory", Help: "Window states held in memory, by form (decoded: windows.cache_keys bounds them; encoded: changed since the last checkpoint, or of the one being written, and let go of until it is durable).",
			ConstLabels: prometheus.Labels{"form": form},
		}, func() float64 { return float64(n()) }))
	}
	for from, n := range map[string]*atomic.Int64{"cold": &s.coldReads, "log": &s.logReads, "badger": &s.badgerReads} {
		reads = append(reads, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "outpost_windows_state_reads_total", Help: "Window states read back into the cache, by where from (cold: decoded from memory; log: decoded from the state log's latest, in memory; badger: read from disk).",
			ConstLabels: prometheus.Labels{"from": from},
		}, func() float64 { return float64(n.Load()) }))
	}
	for _, c := range append([]prometheus.Collector{s.verdicts, s.deadlines, s.keyCap, s.alerts, s.unknown, s.redelivered, s.republished, s.checkpoints, s.cpSeconds, s.cpStates, live, coldBytes, logBytes, s.compactionsDone, s.compactSeconds}, reads...) {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering the windows metrics: %w", err)
		}
	}
	return s, nil
}

// SetRules swaps the rule set; state of rules that keep their id is kept.
func (s *Stage) SetRules(set *rules.Set) { s.rules.Store(set) }

// inFlight is how many batches of matches the consumer may hold unacked:
// every batch since the last checkpoint, so the consumer never waits for a
// checkpoint it did not ask for.
// inFlightBytes bounds them by size: the consumer holds their data until
// acked (as stored: a compressed batch counts its compressed bytes, ~1/6
// of its matches'). An epoch is sealed at a quarter of either; the dirty
// states an epoch makes are bounded by checkpoint_keys (prepare).
const (
	inFlight      = 1024
	inFlightBytes = 64 << 20
)

// fusedBatchBytes is the size of the rule filter's fetches of EVENTS when
// it hands its matches in process (Consumer): 1 MiB, ~25,000 sshd events.
// 256 KiB fetches held less in bursts (VmHWM 15-30% lower), but with
// events arriving meanwhile the filter kept up with only ~155,000 sshd
// events/s at 1,000 addresses against ~220,000 (512 KiB: 218,000, and
// more memory than 1 MiB; docs/benchmarks.md, seventeenth session).
const fusedBatchBytes = 1 << 20

// Run consumes MATCHES, checkpoints and checks absence deadlines until
// ctx ends; a last checkpoint makes what was applied durable before it
// returns. Fused with the rule filter (Apply), MATCHES stays empty, but
// is still consumed: matches left there by an unfused run are not lost.
func (s *Stage) Run(ctx context.Context) error {
	if err := s.open(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: nothing was applied
		}
		return err
	}
	tctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // the last checkpoint ends before the DB may close
	defer cancel()
	wg.Go(func() { s.runCheckpoints(tctx) })
	wg.Go(func() { s.runTimers(tctx) })
	wg.Go(func() { s.runFused(tctx) })
	return s.bus.ConsumeAsync(ctx, bus.ConsumerConfig{
		Stream:        bus.StreamMatches,
		Durable:       "outpost-windows",
		Batch:         512,
		BatchBytes:    4 << 20,
		InFlight:      inFlight,
		InFlightBytes: inFlightBytes,
		Flush:         s.requestCheckpoint,
		Reset:         func() { _ = s.Reset(ctx) },
	}, s.log, s.handle)
}

// open reads back what Badger holds: the watermark's mark, the state log
// after its compaction mark, and the live keys.
func (s *Stage) open(ctx context.Context) error {
	if err := s.loadWatermark(); err != nil {
		return err
	}
	if err := s.loadStreams(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.loadLog(ctx, false); err != nil {
		return err
	}
	if err := s.countKeys(); err != nil {
		return fmt.Errorf("counting window state keys: %w", err)
	}
	return nil
}

// loadStreams reads the creation times of MATCHES and EVENTS: the
// positions the stage keeps are of them (applied.go).
func (s *Stage) loadStreams(ctx context.Context) error {
	st, err := s.js.Stream(ctx, bus.StreamMatches)
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", bus.StreamMatches, err)
	}
	ev, err := s.js.Stream(ctx, bus.StreamEvents)
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", bus.StreamEvents, err)
	}
	s.streams = map[string]int64{
		bus.StreamMatches: st.CachedInfo().Created.UnixNano(),
		bus.StreamEvents:  ev.CachedInfo().Created.UnixNano(),
	}
	s.matchesLeft = 0
	if st.CachedInfo().State.Msgs > 0 {
		s.matchesLeft = st.CachedInfo().State.LastSeq
	}
	return nil
}

// Consumer adapts the rule filter's EVENTS consumer when it hands its
// matches to the stage in process (filter.Sink; windows.fused): every
// batch of events since the last checkpoint stays unacked, as MATCHES
// batches do here.
func (s *Stage) Consumer(cc bus.ConsumerConfig) bus.ConsumerConfig {
	cc.InFlight, cc.InFlightBytes = inFlight, inFlightBytes
	// A batch's matches are held decoded, ~150 bytes each, three at a time
	// (the one the filter fills, one queued, one applied): fetches of 1
	// MiB (~25,000 sshd events) instead of the filter's 4 MiB held ~280 MiB
	// less at 1,000 addresses, and ran faster (docs/benchmarks.md).
	cc.BatchBytes = fusedBatchBytes
	cc.Flush = s.requestCheckpoint
	cc.Reset = func() { _ = s.Reset(context.Background()) }
	return cc
}

// Apply queues the matches of one batch of events, handed in process by
// the rule filter (filter.Sink), for the stage's own goroutine, which
// applies them as handle applies a batch of MATCHES while the filter
// evaluates the next batch: newest is the newest event time the filter
// admitted once the batch was evaluated, size the bytes of its messages.
// ms is the stage's from then on. The wait returns once the batch is
// durable, or fails if it could not be applied (the consumer then hands
// it again, as it does after any failure). src says which EVENTS messages
// the matches come from, in order (each Source's runs take the next
// matches; the rest have none): a batch handed again skips the runs the
// states hold, as handle does for MATCHES.
func (s *Stage) Apply(ctx context.Context, ms []event.Match, src []bus.Source, newest int64, size int) (func() error, error) {
	fb := &fusedBatch{ms: ms, src: src, newest: newest, size: size, applied: make(chan struct{})}
	select {
	case s.fusedq <- fb:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// Not on ctx: at a graceful stop the filter's context ends first, and
	// its last batches are still applied and checkpointed by the windows,
	// which stop after it.
	return func() error {
		select {
		case <-fb.applied:
		case <-s.fusedDone:
			select {
			case <-fb.applied:
			default:
				return errStopped
			}
		}
		if fb.err != nil {
			return fb.err
		}
		return fb.wait()
	}, nil
}

// fusedBatch is a batch of matches handed by Apply.
type fusedBatch struct {
	ms      []event.Match
	src     []bus.Source
	newest  int64
	size    int
	applied chan struct{} // closed once applied (or failed: err)
	wait    func() error
	err     error
}

// runFused applies the batches Apply queues, in order, until ctx ends.
func (s *Stage) runFused(ctx context.Context) {
	defer close(s.fusedDone)
	if !s.waitMatchesLeft(ctx) {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case fb := <-s.fusedq:
			s.applyFused(ctx, fb)
			// Applied (a batch is never applied twice: after a failure the
			// filter evaluates it again): the filter fills it next.
			engine.ReleaseMatches(fb.ms)
			fb.ms = nil
			close(fb.applied)
		}
	}
}

// waitMatchesLeft waits until a durable checkpoint holds the MATCHES
// messages there were when the stage started (an unfused run's, whose
// events the rule filter acked: the windows were behind at its stop or
// kill), or MATCHES is empty; false if ctx ended first. Fused, MATCHES is
// consumed concurrently with the matches handed in process: a key's older
// matches applied after its newer ones would be spent by the newer ones'
// alerts, and their own alerts lost.
func (s *Stage) waitMatchesLeft(ctx context.Context) bool {
	if s.matchesLeft == 0 {
		return true
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		s.mu.Lock()
		done := s.applied.holds(bus.StreamMatches, s.matchesLeft)
		s.mu.Unlock()
		if !done && i%50 == 49 { // every second: acked otherwise (another consumer, a purge)
			if st, err := s.js.Stream(ctx, bus.StreamMatches); err == nil && st.CachedInfo().State.Msgs == 0 {
				done = true
			}
		}
		if done {
			if i > 0 {
				s.log.Info("the matches left in MATCHES when the stage started are applied; those handed in process follow", "through", s.matchesLeft)
			}
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

// applyFused applies fb's matches (steps 1 and 2 of the contract above)
// as handle applies MATCHES messages: the runs of EVENTS messages the
// states hold are skipped, and fb's account of EVENTS positions recorded.
func (s *Stage) applyFused(ctx context.Context, fb *fusedBatch) {
	fb.wait, fb.err = s.apply(ctx, fb.size, func(each func(*event.Match) error, k tracker) (int64, error) {
		ms := fb.ms
		var held []bool
		for _, src := range fb.src {
			n := 0
			for _, r := range src.Runs {
				n += r.N
			}
			if n > len(ms) {
				return 0, fmt.Errorf("the rule filter's runs count %d matches, %d are left", n, len(ms))
			}
			held = held[:0]
			if src.From != 0 { // else: no position
				held = k.held(held, fusedSource, src)
			}
			skip := runSkipper(src, held, k)
			unfused := k.unfusedSkipper(src)
			for i := range ms[:n] {
				byPartition := unfused != nil && unfused(&ms[i]) // told every match, in order
				if skip() {
					continue
				}
				if byPartition {
					k.skipped()
					continue
				}
				if err := each(&ms[i]); err != nil {
					return 0, err
				}
			}
			ms = ms[n:]
			if src.From != 0 && len(src.Runs) > 0 {
				k.add(position{fusedSource, src.From, src.Last()})
			}
		}
		for i := range ms {
			if err := each(&ms[i]); err != nil {
				return 0, err
			}
		}
		return fb.newest, nil
	})
}

var verdictNames = [...]string{engine.Counted: "counted", engine.Fired: "fired", engine.Suppressed: "suppressed", engine.Duplicate: "duplicate"}

// errEarlierFailed fails a batch applied on top of one whose checkpoint
// (or application) failed; errStopped one applied after the last
// checkpoint.
var (
	errEarlierFailed = errors.New("an earlier batch failed; applying again from the last checkpoint")
	errStopped       = errors.New("the windows stage stopped before the batch was checkpointed")
)

// handle decodes a batch of MATCHES messages and applies it. The batch
// moves the watermark to the newest event time its messages' headers
// carry (bus.HeaderWatermark), or, for a message without one, to its
// matches' times. A message the states already hold (handed again after
// a crash) is not applied again, but still moves the watermark as far as
// it did: the checkpoint that holds it may not have written its mark.
func (s *Stage) handle(ctx context.Context, msgs []jetstream.Msg) (func() error, error) {
	size := 0
	for _, msg := range msgs {
		size += len(msg.Data())
	}
	return s.apply(ctx, size, func(each func(*event.Match) error, k tracker) (int64, error) {
		var newest int64
		var held []bool
		for _, msg := range msgs {
			again := false
			md, mdErr := msg.Metadata()
			if mdErr == nil {
				again = !k.take(position{md.Stream, md.Sequence.Stream, md.Sequence.Stream})
			}
			byHeader := false
			if v := msg.Headers().Get(bus.HeaderWatermark); v != "" {
				if wm, err := strconv.ParseInt(v, 10, 64); err == nil {
					newest, byHeader = max(newest, wm), true
				}
			}
			if again && byHeader {
				continue
			}
			// The runs of matches from EVENTS messages the states hold
			// already (republished by a rule filter handed its events
			// again) are skipped.
			src, ok := bus.ParseSource(msg.Headers().Get(bus.HeaderSource))
			if ok && (mdErr != nil || md.Timestamp.UnixNano() < s.streams[bus.StreamEvents]) {
				// Written before EVENTS was made (again): its positions are
				// of a stream gone, not of this one.
				ok = false
			}
			stream := sourceStream(msg.Subject())
			held = held[:0]
			if ok && !again {
				held = k.held(held, stream, src)
				// An EVENTS message whose matches were handed fused (this
				// stage ran fused before a crash, or this message was left
				// by an unfused run that crashed): all its matches.
				for i, r := range src.Runs {
					held[i] = held[i] || k.holds(fusedSource, r.Pos&^chunkBits)
				}
			}
			skip := runSkipper(src, held, k)
			err := bus.DecodeMatches(msg.Data(), func(m *event.Match) error {
				if !byHeader {
					newest = max(newest, m.At().UnixNano())
				}
				if skip() || again {
					return nil
				}
				return each(m)
			}, func(rec []byte, err error) error {
				if skip() || again {
					return nil // dead-lettered the first time
				}
				// Not ours to fix: the filter wrote it. Keep it for a human.
				s.deadLetter(ctx, rec, err)
				return nil
			})
			if err != nil {
				return 0, err
			}
			if ok && !again {
				k.add(position{stream, src.From, src.Last()})
			}
		}
		return newest, nil
	})
}

// tracker is what decode is given to consult and record the positions of
// the messages it decodes, for apply's batch.
type tracker struct {
	s *Stage
	b *batch
}

// take reports whether the message at p is new, and records it; false
// (counted as redelivered) if the states hold it already.
func (k tracker) take(p position) bool {
	if k.holds(p.stream, p.at) {
		k.b.redelivered++
		return false
	}
	k.add(p)
	return true
}

// holds reports whether the states hold position at of stream: a durable
// checkpoint's, or an epoch's since, or this batch's.
func (k tracker) holds(stream string, at uint64) bool {
	return k.s.holds(stream, at) || k.b.positions.holds(stream, at)
}

// add records p (its positions from through at) as the batch's.
func (k tracker) add(p position) {
	created, ok := k.s.streams[streamOf(p.stream)]
	if !ok {
		return
	}
	if k.b.positions == nil {
		k.b.positions = applied{}
	}
	k.b.positions.add(p.stream, created, p.from, p.at)
}

// skipped counts a match skipped as republished.
func (k tracker) skipped() { k.b.republished++ }

// held appends to dst, for each run of src, whether the states hold its
// position in stream.
func (k tracker) held(dst []bool, stream string, src bus.Source) []bool {
	for _, r := range src.Runs {
		dst = append(dst, k.holds(stream, r.Pos))
	}
	return dst
}

// chunkBits are the bits of a position (bus.SourcePosition) that number
// the runs of one EVENTS message in a partition.
const chunkBits = 1<<16 - 1

// unfusedSkipper returns, for the matches of fused runs of src in order
// (each one, held or not), a func that says whether the per-partition
// accounts of an unfused run hold the match, or nil when they hold none of src's
// positions, as always once the mode has been the same since the last
// crash. windows.fused switched after a crash (an upgrade to the embedded
// default): the rule filter hands fused the matches of the EVENTS
// messages it had not acked, whose MATCHES messages the states may hold.
// Each match is placed where the unfused filter put it: its partition,
// and the chunk of its run (filter/source.go), by the sizes of the
// matches of its EVENTS message before it there.
func (k tracker) unfusedSkipper(src bus.Source) func(*event.Match) bool {
	if src.From == 0 || len(src.Runs) == 0 || !k.s.partitionsHold(src.From&^chunkBits, src.Last()|chunkBits) {
		return nil
	}
	parts := uint32(k.s.bus.Partitions())
	run, left := -1, 0
	var runBytes, chunk map[uint32]int
	var rec []byte
	return func(m *event.Match) bool {
		for left == 0 {
			if run++; run >= len(src.Runs) {
				return false
			}
			left = src.Runs[run].N
			runBytes, chunk = map[uint32]int{}, map[uint32]int{}
		}
		left--
		p := bus.Partition(m.RuleID, m.Key, parts)
		rec = event.AppendMatch(rec[:0], m)
		n := len(rec) + binary.MaxVarintLen64
		if runBytes[p] > 0 && runBytes[p]+n > bus.MaxRunBytes {
			chunk[p]++
			runBytes[p] = 0
		}
		runBytes[p] += n
		pos, ok := bus.SourcePosition(src.Runs[run].Pos>>16, chunk[p])
		return ok && k.holds(sourceStream("matches."+strconv.Itoa(int(p))), pos)
	}
}

// partitionsHold reports whether a per-partition account of EVENTS
// positions (unfused) holds a position from lo through hi. Call with mu
// held.
func (s *Stage) partitionsHold(lo, hi uint64) bool {
	for _, a := range []applied{s.applied, s.cur.positions, s.writingPositions()} {
		for name, sp := range a {
			if name != fusedSource && strings.HasPrefix(name, sourceStream("matches.")) && sp.pos.overlaps(lo, hi) {
				return true
			}
		}
	}
	return false
}

// writingPositions are those of the epoch being checkpointed, if any.
func (s *Stage) writingPositions() applied {
	if s.writing == nil {
		return nil
	}
	return s.writing.positions
}

// runSkipper returns a func that says, for each match of src's runs in
// order, whether it is of a run held (counting it), and false past them.
func runSkipper(src bus.Source, held []bool, k tracker) func() bool {
	run, left := 0, 0
	if len(src.Runs) > 0 {
		left = src.Runs[0].N
	}
	return func() bool {
		for run < len(src.Runs) && left == 0 {
			if run++; run < len(src.Runs) {
				left = src.Runs[run].N
			}
		}
		if run == len(src.Runs) {
			return false
		}
		left--
		if run < len(held) && held[run] {
			k.skipped()
			return true
		}
		return false
	}
}

// apply applies the matches decode yields to their states (steps 1 and 2
// of the contract above) in the current epoch; decode consults and records
// through its tracker the positions of each message it decodes (in
// MATCHES, and in EVENTS of the events its matches come from), and skips
// what the states hold already; it returns the newest event time the batch
// lets the watermark move to; size is the bytes of its messages. The func
// apply returns waits until the epoch's checkpoint is durable (step 5 is
// the caller's ack).
func (s *Stage) apply(ctx context.Context, size int, decode func(each func(*event.Match) error, k tracker) (newest int64, err error)) (func() error, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.prepare(ctx); errors.Is(err, errEarlierFailed) {
		// Applied on top of a batch that failed: it will be handed again
		// after it, once Reset ran (bus.ConsumeAsync). Counted, so the
		// deadline checks leave the Reset to the consumer.
		s.toHandAgain++
		return func() error { return errEarlierFailed }, nil
	} else if err != nil {
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
	}, tracker{s, b})
	if err == nil {
		err = s.submit(b, alerts, newest, size)
	}
	if err != nil {
		// The states changed in place: drop them all, with every batch
		// since the last checkpoint (the consumer hands them again).
		b.discard()
		s.fail()
		// This batch too: its consumer hands it again, after its Reset
		// (the deadline checks must not reset first, and let a batch
		// queued after it be applied before it).
		s.toHandAgain++
		return nil, err
	}
	ep := s.cur
	return func() error { return s.await(ep) }, nil
}

// holds reports whether the states hold the message at seq of stream
// already: a durable checkpoint's, or an epoch's applied since (JetStream
// hands a message again when its ack wait passed before its checkpoint
// was durable). The positions held are all of the streams as open found
// them (loadLog keeps only those; the epochs add no other). Call with mu
// held.
func (s *Stage) holds(stream string, seq uint64) bool {
	if _, ok := s.streams[streamOf(stream)]; !ok {
		return false
	}
	return s.applied.holds(stream, seq) || s.cur.positions.holds(stream, seq) || (s.writing != nil && s.writing.positions.holds(stream, seq))
}

// prepare, before a batch: when many states wait for a checkpoint that
// is still being written, it waits for it (bounded memory). It returns
// errEarlierFailed when a checkpoint failed (before, or the one it waited
// for): a batch applied then would have its matches forgotten by the
// Reset while its positions stayed in the epoch in progress, and, handed
// again, be skipped as held. Call with mu held.
func (s *Stage) prepare(ctx context.Context) error {
	if s.failed.Load() {
		return errEarlierFailed
	}
	if s.stopped {
		return errStopped
	}
	for len(s.dirty) >= s.cfg.CheckpointKeys && s.writing != nil {
		if err := s.waitWriting(ctx); err != nil {
			return err
		}
	}
	if s.failed.Load() {
		return errEarlierFailed
	}
	return nil
}

// waitWriting waits, with mu released, for the checkpoint being written.
func (s *Stage) waitWriting(ctx context.Context) error {
	w := s.writing
	s.mu.Unlock()
	defer s.mu.Lock()
	select {
	case <-w.done:
		return nil
	case <-s.dead: // a test killed the checkpoint: it will never be done
		return errKilled
	case <-ctx.Done():
		return ctx.Err()
	}
}

// newBatch begins a batch: the engine.Txn of one batch of matches or one
// deadline check.
func (s *Stage) newBatch() *batch {
	s.batches++
	return &batch{s: s.store, seq: s.batches}
}

// submit publishes a batch's alerts (without waiting for their acks) and
// adds the batch to the current epoch; newest is the newest event time it
// lets the watermark move to, size the bytes of its messages. It asks for
// a checkpoint when the epoch is large enough.
func (s *Stage) submit(b *batch, alerts []*event.Alert, newest int64, size int) error {
	wait, err := s.publish(alerts)
	if err != nil {
		return err
	}
	b.done()
	ep := s.cur
	ep.add(b, wait, max(s.newestApplied(), newest), s.now())
	if !b.deadlines {
		ep.handed++
	}
	ep.bytes += size
	if len(s.dirty) >= s.cfg.CheckpointKeys/2 || ep.batches >= inFlight/4 || ep.bytes >= inFlightBytes/4 {
		s.requestCheckpoint()
	}
	return nil
}

// newestApplied is the newest event time of the batches applied so far,
// checkpointed or not: where the next epoch's mark starts from. The
// watermark itself moves only with checkpoints, so an epoch that fails
// never moves it.
func (s *Stage) newestApplied() int64 {
	n := max(s.wm.Max(), s.cur.maxTime)
	if s.writing != nil {
		n = max(n, s.writing.maxTime)
	}
	return n
}

// await waits until ep is durable or failed.
func (s *Stage) await(ep *epoch) error {
	<-ep.done
	return ep.err
}

// Watermark is the stage's engine.Watermark now. Call with mu held.
func (s *Stage) Watermark() int64 { return s.wm.At() }

// WatermarkTime is the watermark for a reader outside the stage (the status
// page): zero before any event.
func (s *Stage) WatermarkTime() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if at := s.wm.At(); at != 0 {
		return time.Unix(0, at).UTC()
	}
	return time.Time{}
}

// CheckDeadlines fires every absence deadline the watermark has passed
// now, and returns once their alerts are acked and the states
// checkpointed. Run does this after every checkpoint and every second; a
// test calls it to know it happened.
func (s *Stage) CheckDeadlines(ctx context.Context) error {
	for {
		n, err := s.expire(ctx)
		if err != nil {
			return err
		}
		if n < expireLimit {
			return s.Checkpoint(ctx)
		}
	}
}

// expireLimit is how many deadlines one expire looks at.
const expireLimit = 1000

// expire fires the absence rules whose deadline the watermark passed, up
// to expireLimit of them, in the current epoch, and says how many it
// looked at.
func (s *Stage) expire(ctx context.Context) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed.Load() && s.toHandAgain == 0 {
		// Only deadline checks failed: no consumer will hand anything
		// again, so no consumer will Reset.
		if err := s.reset(ctx); err != nil {
			return 0, err
		}
	}
	if err := s.prepare(ctx); err != nil {
		return 0, err // errEarlierFailed until the consumer's Reset
	}
	set := s.rules.Load()
	b := s.newBatch()
	b.deadlines = true
	var alerts []*event.Alert
	n, err := s.windows.FireDue(b, set.Rule, s.wm.At(), expireLimit, func(_ *rules.Rule, _ engine.Deadline, a *event.Alert, v engine.Verdict) {
		b.verdicts[v]++
		if a != nil {
			alerts = append(alerts, a)
		}
	})
	if err == nil && len(b.order) > 0 {
		err = s.submit(b, alerts, 0, 0)
	}
	if err != nil {
		b.discard()
		s.fail()
		return n, err
	}
	b.discard()
	return n, nil
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
			if _, err := s.recountKeys(); err != nil {
				s.log.Warn("counting window state keys failed", "err", err)
			}
			s.mu.Unlock()
		case <-t.C:
		case <-s.checkpointed:
		}
		for {
			n, err := s.expire(ctx)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("checking absence deadlines failed; will retry", "err", err)
			}
			if err != nil || n < expireLimit {
				break
			}
		}
	}
}

// RuleHeader carries an alert's rule id on its ALERTS message, so readers
// can tell it without decoding the alert.
const RuleHeader = "Outpost-Rule"

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
		m.Header.Set(RuleHeader, a.RuleID)
		m.Data = data
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return nil, fmt.Errorf("publishing alert %s: %w", a.ID, err)
		}
		futures = append(futures, f)
	}
	return func(ctx context.Context) error { return s.awaitAlerts(ctx, futures) }, nil
}

// awaitAlerts waits for every alert's ack.
func (s *Stage) awaitAlerts(ctx context.Context, futures []jetstream.PubAckFuture) error {
	for _, f := range futures {
		select {
		case ack := <-f.Ok():
			if !ack.Duplicate {
				s.alerts.WithLabelValues(f.Msg().Header.Get(RuleHeader)).Inc()
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

// Package filter is the stateless rule filter: the JetStream adapter that
// consumes EVENTS, runs the engine's lateness gate and evaluation on each
// event (aggregator/engine), and publishes a small Match to MATCHES for
// every rule an event satisfies, on partition hash(rule, group key) so one
// windows instance sees every match of a key.
//
// A batch of events is acked only after JetStream acked all its matches. A
// redelivered batch publishes its matches again, each MATCHES message
// saying which EVENTS messages its matches come from (bus.HeaderSource,
// source.go), by which the windows recognise the matches they hold. Fused
// with the windows (Sink), a batch is acked once the sink's state holds
// its matches durably, and a batch handed again is handed with the same
// EVENTS positions.
package filter

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/engine"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

// Stage is the rule filter.
type Stage struct {
	// gate is the engine's lateness check, per (source, host); eval its
	// evaluation; coalesce thins absence matches per batch. All used by
	// the one consuming goroutine only.
	gate     *engine.Gate
	lateness engine.Lateness
	eval     engine.Evaluator
	coalesce engine.Coalescer
	late     *prometheus.CounterVec

	bus   *bus.Bus
	rules atomic.Pointer[rules.Set]
	log   *slog.Logger
	// parts holds each MATCHES partition's message being built, and where
	// its account of EVENTS positions stands (source.go); rec is scratch
	// for one match.
	parts []part
	rec   []byte

	events     prometheus.Counter
	matches    *prometheus.CounterVec
	byRule     map[string]prometheus.Counter // matches' children, looked up once
	coalesced  prometheus.Counter
	noKey      *prometheus.CounterVec
	evalErrors *prometheus.CounterVec
	lastErrLog time.Time

	// sink, if set (Fuse), takes each batch's matches in process instead
	// of MATCHES; fused holds them meanwhile (the sink keeps it, and hands
	// it back once applied: engine.MatchBuffer), fusedCap about as many
	// as the largest of the recent batches gave, which a new one is made
	// for.
	sink     Sink
	fused    []event.Match
	fusedCap int
	// fusedSrc says which EVENTS messages fused's matches come from
	// (a new slice per batch: the sink keeps it); fusedNext is where the
	// next run's account starts (source.go's part.next, for the sink).
	fusedSrc  []bus.Source
	fusedNext uint64

	// marks are the gate's Marks at the start of each batch handed and
	// not yet known durable, by seq, the batch's number; acked is the seq
	// of the newest batch whose wait returned nil with none failing before
	// it, failed whether one failed since the last reset. A batch handed
	// again is judged as it was the first time: the reset undoes the
	// gate's admissions back to the first batch not durable (undoAfter).
	marks  []batchMark
	seq    uint64
	acked  atomic.Uint64
	failed atomic.Bool

	// lastSource is the EVENTS sequence of the message evaluated last (0:
	// none, or one without metadata). An account of positions (source.go)
	// spans only EVENTS messages this stage evaluated one after the other:
	// one it was not handed (another rule filter sharing the consumer took
	// it, or it comes again later) starts every account afresh.
	lastSource uint64

	// glog keeps the gate's watermarks in STATELOG (gatelog.go), nil
	// without the embedded server; gateTag is the EVENTS sequence of the
	// message the gate admitted from last.
	glog    *gateLog
	gateTag uint64
}

type batchMark struct {
	seq  uint64
	mark engine.Mark
	tag  uint64 // gateTag when the batch began
}

// Sink takes the matches of each batch of events in process, in place of
// MATCHES: the windows stage, when this process owns every partition
// (windows.fused).
type Sink interface {
	// Consumer adapts the EVENTS consumer to the sink's pace: how many
	// batches may wait for it, and its Flush and Reset.
	Consumer(bus.ConsumerConfig) bus.ConsumerConfig
	// Apply takes a batch's matches, to apply in order; src says which
	// EVENTS messages they come from (each Source's runs take the next
	// matches; one without From has no position), newest is the newest
	// event time the rule filter admitted, size the bytes of the batch's
	// messages. ms and src are the sink's from then on. The wait returns
	// once they are durable.
	Apply(ctx context.Context, ms []event.Match, src []bus.Source, newest int64, size int) (wait func() error, err error)
}

// Fuse makes sink take the matches instead of MATCHES. Call before Run.
func (s *Stage) Fuse(sink Sink) { s.sink = sink }

// New returns the stage and registers its metrics on reg. An event older
// than the newest of its (source, host) by more than lateness allows is
// late: counted and dead-lettered instead of evaluated.
func New(b *bus.Bus, set *rules.Set, lateness engine.Lateness, logger *slog.Logger, reg prometheus.Registerer) (*Stage, error) {
	s := &Stage{
		gate:     engine.NewGate(lateness),
		lateness: lateness,
		late: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_filter_late_events_total",
			Help: "Events older than their source's watermark minus its allowed lateness, dead-lettered, by source.",
		}, []string{"source"}),
		bus: b,
		log: logger.With("component", "filter"),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_filter_events_total",
			Help: "Events evaluated against the rules (fused with the windows, a batch evaluated again after they failed counts again).",
		}),
		matches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_filter_matches_total",
			Help: "Matches (an event that satisfied a rule's condition) published to MATCHES, or handed to the windows in process (fused: a batch evaluated again after they failed counts again), by rule.",
		}, []string{"rule"}),
		coalesced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_filter_absence_matches_coalesced_total",
			Help: "Matches of absence rules without expect held back because a newer match of the same key made them irrelevant (not published, not in outpost_filter_matches_total).",
		}),
		noKey: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_filter_matches_without_key_total",
			Help: "Matching events skipped because a group_by field was empty, by rule.",
		}, []string{"rule"}),
		evalErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_filter_eval_errors_total",
			Help: "Condition evaluations that failed at run time (treated as no match), by rule.",
		}, []string{"rule"}),
	}
	s.eval.NoKey = func(r *rules.Rule, n int) { s.noKey.WithLabelValues(r.ID).Add(float64(n)) }
	s.eval.Failed = func(r *rules.Rule, _ *event.Event, err error) {
		s.evalErrors.WithLabelValues(r.ID).Inc()
		s.logEvalError(r, err)
	}
	s.rules.Store(set)
	for _, c := range []prometheus.Collector{s.events, s.matches, s.noKey, s.evalErrors, s.late, s.coalesced} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering the rule filter's metrics: %w", err)
		}
	}
	return s, nil
}

// SetRules swaps the rule set atomically, between batches.
func (s *Stage) SetRules(set *rules.Set) { s.rules.Store(set) }

// Durable is the rule filter's consumer of EVENTS.
const Durable = "outpost-filter"

// Run consumes EVENTS until ctx ends.
func (s *Stage) Run(ctx context.Context) error {
	cc := bus.ConsumerConfig{
		Stream:     bus.StreamEvents,
		Durable:    Durable,
		Batch:      256,
		BatchBytes: 4 << 20, // about 90 messages of sshd events, compressed
	}
	if s.sink != nil {
		cc = s.sink.Consumer(cc)
	}
	cc.Start = func(ctx context.Context, floor uint64, rewound bool) { s.start(ctx, cc.Durable, floor, rewound) }
	sinkReset := cc.Reset
	cc.Reset = func() {
		s.undoAfter()
		if sinkReset != nil {
			sinkReset()
		}
	}
	return s.bus.ConsumeAsync(ctx, cc, s.log, s.handle)
}

// start is the consumer's Start: the gate restored as of floor, if the
// consumer resumes after it.
func (s *Stage) start(ctx context.Context, durable string, floor uint64, rewound bool) {
	if !rewound {
		s.dropGateLog(ctx, durable, "the consumer was not rewound to its ack floor")
		return
	}
	s.startGateLog(ctx, durable, floor)
}

// startGateLog restores the gate as it stood after EVENTS message floor,
// the last the consumer durable acked, and keeps it from then on
// (gatelog.go). If it cannot read the log, the gate starts empty and is
// not kept.
func (s *Stage) startGateLog(ctx context.Context, durable string, floor uint64) {
	// The gate is restored from the log alone (a second Run starts over
	// from the floor as a restart does).
	s.gate, s.marks, s.glog = engine.NewGate(s.lateness), s.marks[:0], nil
	js := s.bus.JetStream()
	st, err := js.Stream(ctx, bus.StreamEvents)
	if err != nil {
		s.dropGateLog(ctx, durable, "EVENTS unavailable: "+err.Error())
		return
	}
	l := openGateLog(js, durable, st.CachedInfo().Created, s.log, func(ctx context.Context) (uint64, error) {
		c, err := js.Consumer(ctx, bus.StreamEvents, durable)
		if err != nil {
			return 0, err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return 0, err
		}
		return info.AckFloor.Stream, nil
	})
	if err := l.restore(ctx, s.gate, floor); err != nil {
		if ctx.Err() == nil {
			s.gate = engine.NewGate(s.lateness) // not half restored
			s.dropGateLog(ctx, durable, err.Error())
		}
		return
	}
	s.gate.Track()
	s.glog, s.gateTag = l, floor
}

// dropGateLog, when the gate cannot be restored or kept, purges its log:
// this run's gate starts empty and is not recorded, and a later restart
// must not take an earlier run's records for this one's.
func (s *Stage) dropGateLog(ctx context.Context, durable, why string) {
	s.log.Error("the lateness gate starts empty and is not kept: an event judged late before this restart may be evaluated after it", "why", why)
	if err := purgeGateLog(ctx, s.bus.JetStream(), durable); err != nil {
		s.log.Error("purging the lateness gate's log failed; a later restart may restore an earlier run's watermarks", "err", err)
	}
}

// undoAfter, before batches are handed again after a failure, takes back
// the gate's admissions of every batch not known durable: they are all
// handed again, in order, and must not be judged against each other's
// newer events (an event on time at first would be dead-lettered as late
// on the retry).
func (s *Stage) undoAfter() {
	acked := s.acked.Load()
	i := 0
	for i < len(s.marks) && s.marks[i].seq <= acked {
		i++
	}
	if i < len(s.marks) {
		s.gate.Undo(s.marks[i].mark)
		s.gateTag = s.marks[i].tag
		s.marks = s.marks[:i]
	}
	for p := range s.parts {
		s.parts[p].drop()
	}
	s.fusedNext, s.lastSource = 0, 0
	s.failed.Store(false)
}

// forgetDurable drops the gate's record of the batches known durable.
func (s *Stage) forgetDurable() {
	acked := s.acked.Load()
	i := 0
	for i < len(s.marks) && s.marks[i].seq <= acked {
		i++
	}
	if i == 0 {
		return
	}
	if i < len(s.marks) {
		s.gate.Forget(s.marks[i].mark)
	} else {
		s.gate.Forget(s.gate.Mark())
	}
	s.marks = append(s.marks[:0], s.marks[i:]...)
}

// settle wraps batch seq's wait: once it returned nil, with no batch
// failed before it, the batch is durable and its admissions final.
func (s *Stage) settle(seq uint64, wait func() error) func() error {
	return func() error {
		var err error
		if wait != nil {
			err = wait()
		}
		switch {
		case err != nil:
			s.failed.Store(true)
		case !s.failed.Load():
			s.acked.Store(seq)
		}
		return err
	}
}

// handle evaluates a batch of events and publishes its matches; the wait
// it returns collects JetStream's acks, so the next batch is evaluated
// while they are on their way. Fused, it hands the matches to the sink
// and returns its wait.
//
// Each MATCHES message says which EVENTS messages its matches come from
// (bus.HeaderSource, source.go): evaluated again after a crash, an EVENTS
// message gives the same matches at the same positions, and the windows
// skip those they hold.
func (s *Stage) handle(ctx context.Context, msgs []jetstream.Msg) (func() error, error) {
	set := s.rules.Load()
	js := s.bus.JetStream()
	parts := uint32(s.bus.Partitions())
	if len(s.parts) != int(parts) {
		s.parts = make([]part, parts)
	}
	var futures []jetstream.PubAckFuture
	s.forgetDurable()
	if s.glog != nil && s.glog.due() {
		if err := s.glog.snapshot(ctx, s.gate, s.gateTag); err != nil && ctx.Err() == nil {
			s.log.Warn("writing a snapshot of the lateness gate failed; its records are kept until the next", "err", err)
		}
	}
	s.seq++
	batch := s.seq
	s.marks = append(s.marks, batchMark{batch, s.gate.Mark(), s.gateTag})
	// Every match of this batch comes from an event admitted after the
	// events seen so far: the windows may take those as complete once they
	// applied a message of this batch. The batch's last message says the
	// batch's own events are complete too: every message of the batch is
	// before it in MATCHES.
	header := watermarkHeader(s.gate.Newest())
	var source uint64 // the EVENTS message in hand's stream sequence (0: unknown)
	// flush publishes partition p's batch of matches as one message.
	flush := func(p int) error {
		pt := &s.parts[p]
		if len(pt.batch) == 0 {
			return nil
		}
		h := header
		if v := pt.src.Format(); v != "" {
			h = nats.Header{bus.HeaderSource: []string{v}}
			for k, v := range header {
				h[k] = v
			}
		}
		// Compress gives pt.batch back: it is no longer the partition's,
		// even if the publish fails (the batch is then evaluated again).
		data := bus.Compress(pt.batch)
		pt.batch = nil
		f, err := js.PublishMsgAsync(&nats.Msg{Subject: "matches." + strconv.Itoa(p), Data: data, Header: h})
		if err != nil {
			return err
		}
		futures = append(futures, f)
		pt.sent()
		return nil
	}
	emit := func(m *event.Match) error {
		s.matchCounter(m.RuleID).Inc()
		s.rec = event.AppendMatch(s.rec[:0], m)
		p := int(bus.Partition(m.RuleID, m.Key, parts))
		return s.parts[p].add(s.rec, source, func() error { return flush(p) })
	}
	if s.sink != nil {
		// The sink keeps the last batch's, and hands them back once applied.
		s.fused, s.fusedSrc = engine.MatchBuffer(), nil
		if cap(s.fused) < s.fusedCap {
			s.fused = make([]event.Match, 0, s.fusedCap)
		}
		emit = func(m *event.Match) error {
			s.matchCounter(m.RuleID).Inc()
			if m.Value != "" {
				m.Value = strings.Clone(m.Value)
			}
			s.fused = append(s.fused, *m)
			return nil
		}
	}
	fail := func(err error) (func() error, error) {
		// Nothing of this batch took effect: it is handed again.
		s.gate.Undo(s.marks[len(s.marks)-1].mark)
		s.gateTag = s.marks[len(s.marks)-1].tag
		s.marks = s.marks[:len(s.marks)-1]
		if s.glog != nil {
			s.glog.drop()
		}
		s.coalesce.Reset()
		s.coalesce.Coalesced = 0
		for p := range s.parts {
			s.parts[p].drop() // what was published of it is published again
		}
		s.fused, s.fusedSrc, s.fusedNext, s.lastSource = nil, nil, 0, 0
		return nil, err
	}
	for _, msg := range msgs {
		source = 0
		if md, err := msg.Metadata(); err == nil {
			source = md.Sequence.Stream
		}
		if source == 0 || source != s.lastSource+1 {
			// The messages between this one and the one before were not
			// evaluated here (or not in this order): no account spans them.
			for p := range s.parts {
				s.parts[p].restart(source)
			}
			s.fusedNext, _ = bus.SourcePosition(source, 0)
		}
		s.lastSource = source
		for p := range s.parts {
			s.parts[p].chunk = 0
		}
		start := len(s.fused)
		err := bus.DecodeEvents(msg.Data(), func(ev *event.Event) error {
			s.events.Inc()
			if !s.gate.Admit(ev) {
				s.late.WithLabelValues(ev.Source).Inc()
				data, _ := json.Marshal(ev)
				return s.bus.DeadLetter(ctx, "late", s.gate.LateReason(ev), data, ev.Sender)
			}
			if s.sink != nil {
				// The windows keep an event's id in the states it counts in
				// (and a distinct rule's value, below): as a substring of
				// the event's record it would keep the whole record alive.
				ev.ID = strings.Clone(ev.ID)
			}
			return s.eval.Evaluate(set.Candidates(ev, &s.eval.Scratch), ev, func(r *rules.Rule, m *event.Match) error {
				if engine.Coalescable(r) {
					return s.coalesce.Add(r, m, emit)
				}
				return emit(m)
			})
		}, func(line []byte, err error) error {
			return s.bus.DeadLetter(ctx, "filter", err.Error(), line, "")
		})
		if err == nil {
			// Coalesced per EVENTS message: its matches are the same
			// however the messages were batched.
			err = s.coalesce.Flush(emit)
		}
		if err != nil {
			return fail(err)
		}
		if n := len(s.fused) - start; n > 0 {
			s.fusedRun(source, n)
		}
		if s.glog != nil {
			// Tagged with the newest EVENTS message admitted from so far: a
			// message handed again out of order (its ack wait passed) is
			// recorded with watermarks that newer messages moved, which a
			// restart must apply only once those are acked too.
			s.gateTag = max(s.gateTag, source)
			s.glog.note(s.gateTag, s.gate)
		}
	}
	var gateFutures []jetstream.PubAckFuture
	if s.glog != nil {
		var err error
		if gateFutures, err = s.glog.publish(); err != nil {
			return fail(err)
		}
	}
	if s.sink != nil {
		size := 0
		for _, msg := range msgs {
			size += len(msg.Data())
		}
		// The largest of the recent batches, so that a batch larger than
		// the last one does not grow its slice by copying it.
		s.fusedCap = max(len(s.fused), s.fusedCap-s.fusedCap/16)
		wait, err := s.sink.Apply(ctx, s.fused, s.fusedSrc, s.gate.Newest(), size)
		if err != nil {
			return fail(err)
		}
		if len(gateFutures) > 0 {
			sinkWait := wait
			wait = func() error {
				if err := waitFutures(ctx, gateFutures, false); err != nil {
					return err
				}
				if sinkWait == nil {
					return nil
				}
				return sinkWait()
			}
		}
		s.fused, s.fusedSrc = nil, nil
		s.coalesced.Add(float64(s.coalesce.Coalesced))
		s.coalesce.Coalesced = 0
		return s.settle(batch, wait), nil
	}
	last := -1
	for p := range s.parts {
		if len(s.parts[p].batch) > 0 {
			last = p
		}
	}
	for p := range s.parts {
		if p == last {
			header = watermarkHeader(s.gate.Newest())
		}
		if err := flush(p); err != nil {
			return fail(err)
		}
	}
	s.coalesced.Add(float64(s.coalesce.Coalesced))
	s.coalesce.Coalesced = 0
	return s.settle(batch, func() error {
		if err := waitFutures(ctx, futures, true); err != nil {
			return err
		}
		return waitFutures(ctx, gateFutures, false)
	}), nil
}

// waitFutures returns once JetStream acked every publish of futures, or
// with the first error; free gives the acked messages' data back to the
// bus's pool (bus.FreeBatch). Once ctx ended (a graceful stop, which
// still settles the batches in flight and acks those durable) it waits up
// to stopGrace more for the answers.
func waitFutures(ctx context.Context, futures []jetstream.PubAckFuture, free bool) error {
	done := ctx.Done()
	var grace <-chan time.Time
	for _, f := range futures {
		for answered := false; !answered; {
			select {
			case <-f.Ok():
				if free {
					bus.FreeBatch(f.Msg().Data) // acked: the client is done with it
				}
				answered = true
			case err := <-f.Err():
				return err
			case <-done:
				done, grace = nil, time.After(stopGrace)
			case <-grace:
				return ctx.Err()
			}
		}
	}
	return nil
}

// stopGrace bounds how long a batch's publishes are waited for after the
// stage's context ended.
const stopGrace = 5 * time.Second

// fusedRun records that the EVENTS message at source gave the last n
// matches of fused: a run of fusedSrc, in the Source whose account it
// continues, else in a new one.
func (s *Stage) fusedRun(source uint64, n int) {
	pos, ok := bus.SourcePosition(source, 0)
	if !ok {
		s.fusedSrc = append(s.fusedSrc, bus.Source{Runs: []bus.SourceRun{{N: n}}})
		return
	}
	from := pos
	if s.fusedNext != 0 && s.fusedNext <= pos {
		from = s.fusedNext
	}
	s.fusedNext = max(s.fusedNext, pos+1)
	if k := len(s.fusedSrc) - 1; k >= 0 && s.fusedSrc[k].From != 0 && from == s.fusedSrc[k].Last()+1 {
		s.fusedSrc[k].Runs = append(s.fusedSrc[k].Runs, bus.SourceRun{Pos: pos, N: n})
		return
	}
	s.fusedSrc = append(s.fusedSrc, bus.Source{From: from, Runs: []bus.SourceRun{{Pos: pos, N: n}}})
}

// watermarkHeader is the bus.HeaderWatermark header for newest (unix ns),
// "0" before any event: a message without one moves the windows'
// watermark by its own matches' times (the way of versions before the
// header), which for the first batch after a start could pass the
// deadlines of keys whose matches of that same batch are in messages
// still to come (an absence alert too many after a restart).
func watermarkHeader(newest int64) nats.Header {
	return nats.Header{bus.HeaderWatermark: []string{strconv.FormatInt(newest, 10)}}
}

// matchCounter returns outpost_filter_matches_total{rule=id}.
func (s *Stage) matchCounter(id string) prometheus.Counter {
	c, ok := s.byRule[id]
	if !ok {
		if s.byRule == nil {
			s.byRule = map[string]prometheus.Counter{}
		}
		c = s.matches.WithLabelValues(id)
		s.byRule[id] = c
	}
	return c
}

func (s *Stage) logEvalError(r *rules.Rule, err error) {
	if time.Since(s.lastErrLog) < time.Minute {
		return
	}
	s.lastErrLog = time.Now()
	s.log.Warn("rule condition failed at run time; treated as no match (logged at most once a minute)",
		"rule", r.ID, "file", r.File, "line", r.Line, "err", err)
}

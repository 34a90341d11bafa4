// Package filter is the stateless rule filter: it consumes EVENTS, runs each
// rule's single-event condition, and publishes a small Match to MATCHES for
// every rule an event satisfies, on partition hash(rule, group key) so one
// windows instance sees every match of a key.
//
// A batch of events is acked only after JetStream acked all its matches. A
// redelivered batch publishes its matches again; the windows stage drops
// them by event id.
package filter

import (
	"context"
	"fmt"
	json "github.com/goccy/go-json"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/expr-lang/expr/vm"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

// Stage is the rule filter.
type Stage struct {
	lateness func(source string) time.Duration
	// newest is the newest event time seen per (source, host) — each
	// capped at its reception (Event.SeenTime) — the watermark before lateness.
	// Per host, not per source: one sender with a fast clock or a
	// local-time RFC 3164 stamp must not make every other sender's events
	// look late; capped, so a datagram claiming a host and stamped ahead
	// cannot make that host's own events late either.
	newest map[watermarkKey]time.Time
	late   *prometheus.CounterVec

	bus   *bus.Bus
	rules atomic.Pointer[rules.Set]
	log   *slog.Logger
	vm    vm.VM       // used by the one consuming goroutine only
	hits  []rules.Hit // reused per rule evaluation
	// batches holds each MATCHES partition's matches of the batch of events
	// in hand (bus.AppendRecord); rec is scratch for one match.
	batches [][]byte
	rec     []byte

	events     prometheus.Counter
	matches    *prometheus.CounterVec
	byRule     map[string]prometheus.Counter // matches' children, looked up once
	coalesced  prometheus.Counter
	silences   map[silenceKey]*silence // see coalesce
	noKey      *prometheus.CounterVec
	evalErrors *prometheus.CounterVec
	lastErrLog time.Time
}

// New returns the stage. lateness gives each source's allowed lateness:
// an event older than the newest of its source by more than that is late,
// counted and dead-lettered instead of evaluated.
func New(b *bus.Bus, set *rules.Set, lateness func(source string) time.Duration, logger *slog.Logger, reg prometheus.Registerer) *Stage {
	s := &Stage{
		lateness: lateness,
		newest:   map[watermarkKey]time.Time{},
		late: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_filter_late_events_total",
			Help: "Events older than their source's watermark minus its allowed lateness, dead-lettered, by source.",
		}, []string{"source"}),
		bus: b,
		log: logger.With("component", "filter"),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_filter_events_total",
			Help: "Events evaluated against the rules.",
		}),
		matches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_filter_matches_total",
			Help: "Matches published to MATCHES (an event that satisfied a rule's condition), by rule.",
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
	s.rules.Store(set)
	reg.MustRegister(s.events, s.matches, s.noKey, s.evalErrors, s.late, s.coalesced)
	return s
}

// SetRules swaps the rule set atomically, between batches.
func (s *Stage) SetRules(set *rules.Set) { s.rules.Store(set) }

// Run consumes EVENTS until ctx ends.
func (s *Stage) Run(ctx context.Context) error {
	return s.bus.ConsumeAsync(ctx, bus.ConsumerConfig{
		Stream:     bus.StreamEvents,
		Durable:    "outpost-filter",
		Batch:      256,
		BatchBytes: 4 << 20, // about 16 full messages of events
	}, s.log, s.handle)
}

// handle evaluates a batch of events and publishes its matches; the wait
// it returns collects JetStream's acks, so the next batch is evaluated
// while they are on their way.
func (s *Stage) handle(ctx context.Context, msgs []jetstream.Msg) (func() error, error) {
	set := s.rules.Load()
	js := s.bus.JetStream()
	parts := uint32(s.bus.Partitions())
	if len(s.batches) != int(parts) {
		s.batches = make([][]byte, parts)
	}
	var futures []jetstream.PubAckFuture
	// flush publishes partition p's batch of matches as one message.
	flush := func(p int) error {
		if len(s.batches[p]) == 0 {
			return nil
		}
		f, err := js.PublishMsgAsync(&nats.Msg{Subject: "matches." + strconv.Itoa(p), Data: s.batches[p]})
		if err != nil {
			return err
		}
		futures = append(futures, f)
		s.batches[p] = nil // the message owns the bytes now
		return nil
	}
	fail := func(err error) (func() error, error) {
		clear(s.silences)
		for p := range s.batches {
			s.batches[p] = s.batches[p][:0] // the batch will be evaluated again
		}
		return nil, err
	}
	for _, msg := range msgs {
		err := bus.DecodeEvents(msg.Data(), func(ev *event.Event) error {
			return s.evaluate(ctx, set, ev, parts, flush)
		}, func(line []byte, err error) error {
			return s.bus.DeadLetter(ctx, "filter", err.Error(), line, "")
		})
		if err != nil {
			return fail(err)
		}
	}
	if err := s.flushSilences(parts, flush); err != nil {
		return fail(err)
	}
	for p := range s.batches {
		if err := flush(p); err != nil {
			return fail(err)
		}
	}
	return func() error {
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}, nil
}

// evaluate runs every rule on one event and adds its matches to their
// partition's batch (published by flush when full and at the
// end of the batch of events).
func (s *Stage) evaluate(ctx context.Context, set *rules.Set, ev *event.Event, parts uint32, flush func(int) error) error {
	s.events.Inc()
	if s.isLate(ev) {
		s.late.WithLabelValues(ev.Source).Inc()
		// The time it was judged at: its reception, if stamped ahead.
		judged := "event time " + ev.Time.Format(time.RFC3339)
		if seen := ev.SeenTime(); !seen.Equal(ev.Time) {
			judged = fmt.Sprintf("received %s (stamped %s, ahead of its reception)", seen.Format(time.RFC3339), ev.Time.Format(time.RFC3339))
		}
		reason := fmt.Sprintf("late: %s is more than %s behind the newest %s event from %s",
			judged, s.lateness(ev.Source), ev.Source, ev.Host)
		data, _ := json.Marshal(ev)
		return s.bus.DeadLetter(ctx, "late", reason, data, ev.Sender)
	}
	for _, r := range set.Rules {
		var noKey int
		var err error
		s.hits, noKey, err = r.Evaluate(&s.vm, ev, s.hits[:0])
		if err != nil {
			s.evalErrors.WithLabelValues(r.ID).Inc()
			s.logEvalError(r, err)
			continue
		}
		if noKey > 0 {
			s.noKey.WithLabelValues(r.ID).Add(float64(noKey))
		}
		for _, h := range s.hits {
			m := event.Match{
				RuleID: r.ID, Key: h.Key, Time: ev.Time, EventID: ev.ID,
				Step: h.Step, Value: h.Value, Fields: r.CarriedFields(ev), Seen: ev.SeenTime(),
			}
			if r.Kind == rules.KindAbsence && len(r.Steps) == 1 {
				if err := s.coalesce(r, &m, parts, flush); err != nil {
					return err
				}
				continue
			}
			if err := s.emit(&m, parts, flush); err != nil {
				return err
			}
		}
	}
	return nil
}

// emit adds m to its partition's batch, publishing the batch first if m
// would not fit.
func (s *Stage) emit(m *event.Match, parts uint32, flush func(int) error) error {
	s.matchCounter(m.RuleID).Inc()
	s.rec = event.AppendMatch(s.rec[:0], m)
	p := int(partition(m.RuleID, m.Key, parts))
	if !bus.Fits(s.batches[p], len(s.rec)) {
		if err := flush(p); err != nil {
			return err
		}
	}
	if s.batches[p] == nil {
		s.batches[p] = make([]byte, 0, 32<<10) // fewer copies as it grows
	}
	s.batches[p] = bus.AppendRecord(s.batches[p], s.rec)
	return nil
}

// silence is what coalesce keeps per (absence rule, key) for the batch in
// hand: the newest time (Match.At, where the windows place a match) of the
// key's matches published, and the newest match since then, held back.
type silenceKey struct{ rule, key string }

type silence struct {
	anchor  int64
	pending event.Match
	held    bool
}

// coalesce publishes the matches of an absence rule without `expect` (a
// source going silent: every event of the key matches) sparingly. Applied
// to the key's state, such a match only moves the deadline to its time
// plus `for`, or reports a silence if it comes after the deadline. So of
// the matches after a published one (the anchor) and within `for` of it,
// only the newest changes anything: each one held back is replaced by a
// newer one, and the last is published at the end of the batch, or as soon
// as a match outside (anchor, anchor+for] arrives, which is published as
// is. The windows end up in the state every match would have given them,
// raising the same alerts, with a match per key per `for` of event time
// instead of one per event.
func (s *Stage) coalesce(r *rules.Rule, m *event.Match, parts uint32, flush func(int) error) error {
	k := silenceKey{m.RuleID, m.Key}
	sl := s.silences[k]
	if sl == nil {
		if s.silences == nil {
			s.silences = map[silenceKey]*silence{}
		}
		sl = &silence{}
		s.silences[k] = sl
		sl.anchor = m.At().UnixNano()
		return s.emit(m, parts, flush)
	}
	t := m.At().UnixNano()
	inReach := t > sl.anchor && t <= sl.anchor+int64(r.For)
	if sl.held && inReach && t > sl.pending.At().UnixNano() {
		// Newer where the windows place it, so it also moves their
		// watermark at least as far as the one it replaces.
		s.coalesced.Inc()
		sl.pending = *m
		return nil
	}
	if sl.held {
		// m is older than the one held, or beyond reach: publish in order.
		sl.held = false
		sl.anchor = max(sl.anchor, sl.pending.At().UnixNano())
		if err := s.emit(&sl.pending, parts, flush); err != nil {
			return err
		}
		inReach = t > sl.anchor && t <= sl.anchor+int64(r.For)
	}
	if inReach {
		sl.pending, sl.held = *m, true
		return nil
	}
	sl.anchor = max(sl.anchor, t)
	return s.emit(m, parts, flush)
}

// flushSilences publishes the matches coalesce holds; at the end of a
// batch of events.
func (s *Stage) flushSilences(parts uint32, flush func(int) error) error {
	for _, sl := range s.silences {
		if sl.held {
			if err := s.emit(&sl.pending, parts, flush); err != nil {
				return err
			}
		}
	}
	clear(s.silences)
	return nil
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

// maxWatermarks bounds the per-host watermarks; past it they start over
// (nothing is judged late until each host is seen again).
const maxWatermarks = 100_000

type watermarkKey struct{ source, host string }

// isLate reports whether ev (at its SeenTime) is behind its host's watermark by
// more than its source's allowed lateness, and moves the watermark on.
func (s *Stage) isLate(ev *event.Event) bool {
	k := watermarkKey{ev.Source, ev.Host}
	if k.host == "" {
		k.host, _, _ = strings.Cut(ev.Sender, ":")
	}
	newest := s.newest[k]
	t := ev.SeenTime()
	if !newest.IsZero() && t.Before(newest.Add(-s.lateness(ev.Source))) {
		return true
	}
	if t.After(newest) {
		if len(s.newest) >= maxWatermarks {
			clear(s.newest)
		}
		s.newest[k] = t
	}
	return false
}

// partition is hash(rule, key) mod n: FNV-1a (32-bit) over rule, a zero
// byte and key, written out so the hot path allocates no hasher. Stable
// across versions: MATCHES partitions depend on it.
func partition(rule, key string, n uint32) uint32 {
	const offset, prime = 2166136261, 16777619
	h := uint32(offset)
	for i := 0; i < len(rule); i++ {
		h = (h ^ uint32(rule[i])) * prime
	}
	h *= prime // the zero separator: h ^ 0 == h
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * prime
	}
	return h % n
}

func (s *Stage) logEvalError(r *rules.Rule, err error) {
	if time.Since(s.lastErrLog) < time.Minute {
		return
	}
	s.lastErrLog = time.Now()
	s.log.Warn("rule condition failed at run time; treated as no match (logged at most once a minute)",
		"rule", r.ID, "file", r.File, "line", r.Line, "err", err)
}

func (s *Stage) deadLetter(ctx context.Context, msg jetstream.Msg, cause error) {
	if err := s.bus.DeadLetter(ctx, "filter", cause.Error(), msg.Data(), ""); err != nil {
		s.log.Error("dead-lettering an unreadable message failed", "err", err)
	}
}

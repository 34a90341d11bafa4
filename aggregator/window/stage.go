// Package window is the stateful stage: it consumes MATCHES, keeps each
// (rule, group key)'s window in Badger, in event time, and publishes an
// alert to ALERTS when a rule's condition holds.
//
// Ordering per batch, which is what makes a crash at any point safe:
//
//  1. apply every match to its group state (in memory, in a Badger txn);
//  2. publish the alerts, each with its deterministic id as Nats-Msg-Id,
//     and wait for JetStream's acks;
//  3. commit the Badger txn;
//  4. ack the matches.
//
// A crash before 3 redelivers the batch: the same states give the same
// alerts with the same ids, which JetStream's duplicate window drops. A crash
// between 3 and 4 redelivers matches the state already holds; apply treats
// them as duplicates.
package window

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/state"
	"github.com/outpost-siem/outpost/rules"
)

// Config is the `windows` section of outpost.yaml.
type Config struct {
	// AllowedLateness keeps events in a window's state this long past the
	// window, so an event that arrives out of order still counts.
	AllowedLateness time.Duration `yaml:"allowed_lateness"`
	// StateGrace is added to every state key's TTL (window + lateness, or
	// suppress) so a backlog replayed after downtime still finds its state.
	StateGrace time.Duration `yaml:"state_grace"`
}

// Validate applies defaults.
func (c *Config) Validate() error {
	if c.AllowedLateness == 0 {
		c.AllowedLateness = time.Minute
	}
	if c.StateGrace == 0 {
		c.StateGrace = time.Hour
	}
	if c.AllowedLateness < 0 || c.StateGrace < 0 {
		return errors.New("windows.allowed_lateness and windows.state_grace must not be negative")
	}
	return nil
}

// Stage is the windows stage.
type Stage struct {
	cfg   Config
	bus   *bus.Bus
	db    *state.DB
	rules atomic.Pointer[rules.Set]
	log   *slog.Logger

	verdicts *prometheus.CounterVec
	alerts   prometheus.Counter
	unknown  prometheus.Counter
}

// New returns the stage. cfg must have been validated.
func New(cfg Config, b *bus.Bus, db *state.DB, set *rules.Set, logger *slog.Logger, reg prometheus.Registerer) *Stage {
	s := &Stage{
		cfg: cfg, bus: b, db: db,
		log: logger.With("component", "windows"),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_windows_matches_total",
			Help: "Matches applied to window state, by what became of them (counted, fired, suppressed, duplicate).",
		}, []string{"verdict"}),
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
	reg.MustRegister(s.verdicts, s.alerts, s.unknown)
	return s
}

// SetRules swaps the rule set; state of rules that keep their id is kept.
func (s *Stage) SetRules(set *rules.Set) { s.rules.Store(set) }

// Run consumes MATCHES until ctx ends.
func (s *Stage) Run(ctx context.Context) error {
	return s.bus.Consume(ctx, bus.ConsumerConfig{
		Stream:  bus.StreamMatches,
		Durable: "outpost-windows",
		Batch:   512,
	}, s.log, s.handle)
}

var verdictNames = [...]string{Counted: "counted", Fired: "fired", Suppressed: "suppressed", Duplicate: "duplicate"}

func (s *Stage) handle(ctx context.Context, msgs []jetstream.Msg) error {
	set := s.rules.Load()
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	states := map[string]*groupState{}
	ttls := map[string]time.Duration{}
	var alerts []*event.Alert
	for _, msg := range msgs {
		var m event.Match
		if err := json.Unmarshal(msg.Data(), &m); err != nil {
			// Not ours to fix: the filter wrote it. Keep it for a human.
			s.deadLetter(ctx, msg, err)
			continue
		}
		r := set.Rule(m.RuleID)
		if r == nil {
			s.unknown.Inc()
			continue
		}
		var st *groupState
		var key string
		if r.Kind != rules.KindMatch || r.Suppress > 0 {
			key = stateKey(r.ID, m.Key)
			var err error
			if st, err = s.load(txn, states, key); err != nil {
				return err
			}
			ttls[key] = s.ttl(r)
		} else {
			st = &groupState{} // stateless: a plain match without suppression
		}
		a, v := apply(r, st, &m, s.cfg.AllowedLateness)
		s.verdicts.WithLabelValues(verdictNames[v]).Inc()
		if a != nil {
			alerts = append(alerts, a)
		}
	}
	if err := s.publish(ctx, alerts); err != nil {
		return err
	}
	for key, st := range states {
		if err := s.save(txn, key, st, ttls[key]); errors.Is(err, badger.ErrTxnTooBig) {
			if err := txn.Commit(); err != nil {
				return fmt.Errorf("committing window state: %w", err)
			}
			txn = s.db.NewTransaction(true)
			if err := s.save(txn, key, st, ttls[key]); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("committing window state: %w", err)
	}
	return nil
}

func (s *Stage) ttl(r *rules.Rule) time.Duration {
	return r.Window + s.cfg.AllowedLateness + r.Suppress + s.cfg.StateGrace
}

func stateKey(rule, key string) string { return "w/" + rule + "\x00" + key }

func (s *Stage) load(txn *badger.Txn, cache map[string]*groupState, key string) (*groupState, error) {
	if st, ok := cache[key]; ok {
		return st, nil
	}
	st := &groupState{}
	item, err := txn.Get([]byte(key))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
	case err != nil:
		return nil, fmt.Errorf("reading window state: %w", err)
	default:
		if err := item.Value(func(v []byte) error { return json.Unmarshal(v, st) }); err != nil {
			// A state we cannot read is a bug or disk damage; start the
			// window over rather than stop the pipeline.
			s.log.Error("discarding unreadable window state", "key", key, "err", err)
			st = &groupState{}
		}
	}
	cache[key] = st
	return st, nil
}

func (s *Stage) save(txn *badger.Txn, key string, st *groupState, ttl time.Duration) error {
	if len(st.Times) == 0 && st.LastAlert == 0 && st.Spent == 0 {
		return txn.Delete([]byte(key))
	}
	v, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return txn.SetEntry(badger.NewEntry([]byte(key), v).WithTTL(ttl))
}

// publish sends alerts and waits for every ack. The alert id is the
// Nats-Msg-Id, so a replay within the stream's duplicate window is dropped
// by JetStream itself.
func (s *Stage) publish(ctx context.Context, alerts []*event.Alert) error {
	if len(alerts) == 0 {
		return nil
	}
	js := s.bus.JetStream()
	futures := make([]jetstream.PubAckFuture, 0, len(alerts))
	for _, a := range alerts {
		data, err := json.Marshal(a)
		if err != nil {
			return err
		}
		m := nats.NewMsg("alerts." + SeverityName(a.Severity))
		m.Header.Set(jetstream.MsgIDHeader, a.ID)
		m.Data = data
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("publishing alert %s: %w", a.ID, err)
		}
		futures = append(futures, f)
	}
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

func (s *Stage) deadLetter(ctx context.Context, msg jetstream.Msg, cause error) {
	if err := s.bus.DeadLetter(ctx, "windows", cause.Error(), msg.Data(), ""); err != nil {
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

package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
)

// supervised runs a source that can fail to start — the Azure Blob source
// reads its secrets and builds its clients in Run, so a connection string
// or key that is missing or malformed at run time shows only there — so
// that its failure never stops the appliance: it is counted
// (outpost_source_failures_total{source}), logged (first failure, then
// every tenth), reported by problems() (/readyz and /status) and run
// again after capped exponential backoff (1s to 5m). An attempt that keeps
// running for healthyAfter clears the report and the backoff.
type supervised struct {
	name     string
	run      func(context.Context) error
	log      *slog.Logger
	failures prometheus.Counter
	backoff  bus.Backoff

	mu      sync.Mutex
	problem error
}

const healthyAfter = 30 * time.Second

func newSupervised(name string, run func(context.Context) error, logger *slog.Logger, failures *prometheus.CounterVec) *supervised {
	return &supervised{
		name: name, run: run, log: logger.With("component", name),
		failures: failures.WithLabelValues(name),
		backoff:  bus.Backoff{Min: time.Second, Max: 5 * time.Minute},
	}
}

// newSourceFailures is the counter every supervised source shares.
func newSourceFailures(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outpost_source_failures_total",
		Help: "Times a source stopped with an error (it cannot run: a bad or missing secret) and was restarted after backoff, by source.",
	}, []string{"source"})
	return c, reg.Register(c)
}

// Run runs the source until ctx ends, restarting it after each failure.
func (s *supervised) Run(ctx context.Context) error {
	attempt := 0
	for {
		start := time.Now()
		healthy := time.AfterFunc(healthyAfter, func() { s.setProblem(nil) })
		err := s.run(ctx)
		healthy.Stop()
		if ctx.Err() != nil || err == nil {
			return nil
		}
		if time.Since(start) >= healthyAfter {
			attempt = 0
		}
		s.failures.Inc()
		s.setProblem(fmt.Errorf("%s cannot run: %w", s.name, err))
		delay := s.backoff.Delay(attempt)
		if attempt%10 == 0 {
			s.log.Error("source cannot run; the other sources and stages go on; retrying", "attempt", attempt+1, "retry_in", delay, "err", err)
		}
		attempt++
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func (s *supervised) setProblem(err error) {
	s.mu.Lock()
	s.problem = err
	s.mu.Unlock()
}

// Problem returns why the source cannot run, or nil.
func (s *supervised) Problem() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.problem
}

// Package azureblob is Outpost's Azure Blob source: it reads what Azure
// exports to storage accounts through diagnostic settings (Entra ID
// sign-ins and audits, the Activity Log with Defender alerts, NSG and VNet
// flow logs, any other resource-log category), turns each record into
// normalized events and publishes them to EVENTS.
//
// Reading is incremental and exactly-once up to event ids: each blob's
// position is checkpointed in Badger only after JetStream acked the events
// before it, and event ids derive from the record's position, so a
// re-read after a crash produces the same ids. See README.md for the
// layout, the mapping and the guarantees.
//
// The parsers touch no network and are exported as Parse for tests and
// fuzzing.
package azureblob

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/ingest/instrument"
	"github.com/outpost-siem/outpost/aggregator/state"
)

// Sink is where the source delivers. *bus.Bus implements it.
//
// PublishEvents returns nil only when JetStream acked every event; the
// source advances a checkpoint only then. On an error some events may have
// been published: the source reads them again later with the same ids.
// DeadLetter keeps a bad record (with its reason and the blob it came
// from) and returns when it is stored.
type Sink interface {
	PublishEvents(ctx context.Context, evs []*event.Event) error
	DeadLetter(ctx context.Context, source, reason string, data []byte, sender string) error
}

const (
	// logEvery is how often a repeated problem of one kind is logged.
	logEvery = time.Minute
	// publishBatch bounds one PublishEvents call.
	publishBatch = 2000
)

// Source polls the configured storage accounts.
type Source struct {
	cfg   Config
	sink  Sink
	db    *state.DB
	log   *slog.Logger
	m     *metrics
	limit *instrument.LogLimiter
	now   func() time.Time
	// retry is the SDK's retry policy for every request (defaultRetry;
	// tests shorten it).
	retry policy.RetryOptions
	// records are the record paths the running rules read (RecordFields);
	// swapped on rule reloads.
	records atomic.Pointer[RecordFields]
}

// SetRecordFields makes the records read from now on fill the paths of
// rf (nil: none). Records already read keep what they had.
func (s *Source) SetRecordFields(rf *RecordFields) { s.records.Store(rf) }

// New validates cfg, registers the source's metrics on reg and returns the
// source. It does no I/O: secrets are read and clients built in Run. A nil
// logger discards; a nil reg registers nothing.
func New(cfg Config, sink Sink, db *state.DB, logger *slog.Logger, reg prometheus.Registerer) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if sink == nil || db == nil {
		return nil, errors.New("azureblob: a sink and a state database are required")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Source{
		cfg:   cfg,
		sink:  sink,
		db:    db,
		log:   logger.With("component", SourceName),
		m:     m,
		limit: instrument.NewLogLimiter(logEvery),
		now:   time.Now,
		retry: defaultRetry(),
	}, nil
}

// Run polls every account until ctx ends, then returns nil once every
// in-flight read stopped (an interrupted batch is not checkpointed, so it
// is read again on the next start). It returns an error only when an
// account cannot be set up at all (a secret that is not there). Failures
// while polling (throttling, network, JetStream) are counted, logged
// rate-limited and retried with backoff; they never end Run.
func (s *Source) Run(ctx context.Context) error {
	accounts := make([]*account, 0, len(s.cfg.Accounts))
	for i, ac := range s.cfg.Accounts {
		svc, err := newServiceClient(fmt.Sprintf("ingest.azure_blob.accounts[%d]", i), ac, s.retry)
		if err != nil {
			return err
		}
		accounts = append(accounts, &account{Source: s, cfg: ac, svc: svc, roots: make(map[string][]string)})
	}
	var wg sync.WaitGroup
	for _, a := range accounts {
		wg.Go(func() { a.run(ctx) })
	}
	wg.Wait()
	for kind, n := range s.limit.Flush() {
		s.log.Warn("azure blob problems since the last report", "error_type", kind, "count", n)
	}
	return nil
}

// logProblem logs a problem of one kind, rate-limited.
func (s *Source) logProblem(kind, msg string, args ...any) {
	if n, ok := s.limit.Allow(kind); ok {
		s.log.Warn(msg, append(args, "error_type", kind, "count", n)...)
	}
}

// run polls one account until ctx ends: every poll_interval while polls
// succeed, with capped exponential backoff and jitter while they fail.
func (a *account) run(ctx context.Context) {
	backoff := bus.Backoff{Min: a.Source.cfg.PollInterval, Max: a.Source.cfg.MaxBackoff}
	failures := 0
	for {
		err := a.poll(ctx)
		if ctx.Err() != nil {
			return
		}
		delay := a.Source.cfg.PollInterval
		if err != nil {
			a.m.polls.WithLabelValues("error").Inc()
			a.logProblem("poll", "azure blob poll failed; backing off", "account", a.cfg.Name, "err", err)
			delay = max(delay, backoff.Delay(failures))
			failures++
		} else {
			a.m.polls.WithLabelValues("ok").Inc()
			failures = 0
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Metrics returns the source's component metrics (events and bytes
// received), for the link economy the pipeline reports.
func (s *Source) Metrics() *instrument.Component { return s.m.component }

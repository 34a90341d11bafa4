package forwarder

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/forwarder/cef"
)

// link is a way out for a destination's consumer: a receiver's format and
// transport. The primary link is the destination's own; the fallback link
// is built from the fallback destination's settings but is a separate
// connection owned by this consumer's goroutine.
type link struct {
	name string
	cfg  *Destination
	fmt  formatter
	snd  sender
}

// destination is one destination's consumer loop. Everything in it is
// used by the one consuming goroutine, apart from the atomic counters that
// metrics and Status read.
type destination struct {
	cfg      *Destination
	bus      *bus.Bus
	sent     *sentIDs
	log      *slog.Logger
	enc      *cef.Encoder
	primary  *link
	fallback *link // nil without one
	tags     map[string]bool
	alertsRL *rate.Limiter // nil: unlimited
	bytesRL  *rate.Limiter

	// Failover state, across batches.
	downSince      time.Time // zero while the primary works
	lastPrimaryTry time.Time
	onFallback     bool

	m          *destMetrics
	lastErrLog time.Time

	// The delivery loop's state (deliver.go).
	queue       []entry
	next        int             // see unwritten
	waiting     map[connRef]int // unconfirmed alerts per connection
	lastSeq     uint64          // stream sequence of the last alert queued
	queueBytes  int
	lastWrite   time.Time
	drainFailed bool
	backoff     bus.Backoff
	attempt     int
}

func newDestination(d *Destination, fb *Destination, cfg *Config, version string, b *bus.Bus, sent *sentIDs, logger *slog.Logger, m *destMetrics) (*destination, error) {
	enc, err := cef.NewEncoder(cef.Options{
		Vendor: cfg.Vendor, Product: "Outpost", Version: version,
		DeviceExternalID: cfg.Instance, DeviceHost: cfg.Hostname,
	})
	if err != nil {
		return nil, err
	}
	ds := &destination{
		cfg: d, bus: b, sent: sent, enc: enc, m: m,
		log: logger.With("component", "forwarder", "destination", d.Name),
	}
	if ds.primary, err = newLink(d, cfg, enc); err != nil {
		return nil, err
	}
	if fb != nil {
		if ds.fallback, err = newLink(fb, cfg, enc); err != nil {
			return nil, err
		}
	}
	if len(d.Tags) > 0 {
		ds.tags = map[string]bool{}
		for _, t := range d.Tags {
			ds.tags[t] = true
		}
	}
	if r := d.RateLimit.AlertsPerSecond; r > 0 {
		ds.alertsRL = rate.NewLimiter(rate.Limit(r), max(1, int(r)))
	}
	if r := d.RateLimit.BytesPerSecond; r > 0 {
		ds.bytesRL = rate.NewLimiter(rate.Limit(r), max(int(r), 64<<10))
	}
	return ds, nil
}

func newLink(d *Destination, cfg *Config, enc *cef.Encoder) (*link, error) {
	var tc *tls.Config
	if d.Transport == TransportTLS {
		var err error
		if tc, err = clientTLS(d); err != nil {
			return nil, err
		}
	}
	return &link{
		name: d.Name, cfg: d, snd: newSender(d, tc),
		fmt: formatter{format: d.Format, facility: facilities[d.Facility], hostname: cfg.Hostname, maxSize: int(d.MaxMessageSize), enc: enc},
	}, nil
}

func (d *destination) consumer() string { return "outpost-forwarder-" + d.cfg.Name }

// resume makes the consumer deliver again from its ack floor, at once.
//
// Alerts a previous process fetched and never acked (it crashed, or was
// killed) are otherwise redelivered only once their AckWait runs out,
// behind every newer alert: out of order. Resetting the consumer to its ack
// floor forgets those deliveries, so the first alert this process gets is
// the oldest one not known delivered, and the rest follow in stream order.
// What lies above the floor and was acked is fetched again and suppressed
// by sentIDs. Only one process may consume a destination (the forwarder's
// order guarantee needs that anyway). A consumer that does not exist yet
// has nothing to resume.
func (d *destination) resume(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	js := d.bus.JetStream()
	// The reset API is answered by the consumer itself: ask only one that
	// exists.
	_, err := js.Consumer(ctx, bus.StreamAlerts, d.consumer())
	if err == nil {
		_, err = js.ResetConsumer(ctx, bus.StreamAlerts, d.consumer())
	}
	switch {
	case err == nil, errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil
	case ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
		return nil // stopping
	default:
		return fmt.Errorf("resetting consumer %s to its ack floor: %w", d.consumer(), err)
	}
}

// pass applies the destination's filter.
func (d *destination) pass(a *event.Alert) bool {
	if a.Severity < d.cfg.MinSeverity {
		return false
	}
	if d.tags == nil {
		return true
	}
	return slices.ContainsFunc(a.Tags, func(t string) bool { return d.tags[t] })
}

// pick chooses the link for the next send.
//
// Failover semantics: without a fallback, always the primary. With one,
// the primary until it has failed without a success for failover_after;
// from then on the fallback, except that the primary is tried again once
// every backoff_max, and the first success there switches back. Alerts stay
// in stream order either way (a batch is finished, wherever it went, before
// the next one starts); order across the two receivers is not defined.
func (d *destination) pick() *link {
	if d.fallback == nil || d.downSince.IsZero() || time.Since(d.downSince) < d.cfg.FailoverAfter {
		return d.primary
	}
	if time.Since(d.lastPrimaryTry) >= d.cfg.BackoffMax {
		d.lastPrimaryTry = time.Now()
		return d.primary
	}
	if !d.onFallback {
		d.onFallback = true
		d.log.Warn("destination down; failing over", "fallback", d.fallback.name, "down_for", time.Since(d.downSince).Round(time.Second))
	}
	return d.fallback
}

func (d *destination) recovered(l *link) {
	if l != d.primary || d.downSince.IsZero() {
		return
	}
	d.log.Info("destination reachable again; backlog is being delivered", "down_for", time.Since(d.downSince).Round(time.Millisecond))
	d.downSince, d.onFallback = time.Time{}, false
}

func (d *destination) failed(l *link, err error) {
	d.m.errs.WithLabelValues(errorKind(err)).Inc()
	if l == d.primary {
		if d.downSince.IsZero() {
			d.downSince = time.Now()
		}
		d.lastPrimaryTry = time.Now()
	}
	if time.Since(d.lastErrLog) < 30*time.Second {
		return
	}
	d.lastErrLog = time.Now()
	msg := "destination unreachable; alerts wait in JetStream and will be retried"
	if errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded) {
		msg = "destination stopped accepting; alerts wait in JetStream and will be retried"
	}
	d.log.Warn(msg, "via", l.name, "address", l.cfg.Address, "err", err)
}

// wait takes one alert's and size bytes' worth of tokens.
func (d *destination) wait(ctx context.Context, size int) error {
	if d.alertsRL != nil {
		if err := d.alertsRL.Wait(ctx); err != nil {
			return ctxErr(ctx, err)
		}
	}
	if d.bytesRL != nil {
		if err := d.bytesRL.WaitN(ctx, min(size, d.bytesRL.Burst())); err != nil {
			return ctxErr(ctx, err)
		}
	}
	return nil
}

// ctxErr prefers the context's error: rate.Wait also fails when the wait
// would outlast the context's deadline.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// destMetrics are one destination's counters. The sent counts are atomics
// that the Prometheus CounterFuncs and Status both read, so the status page
// and /metrics agree without gathering the registry.
type destMetrics struct {
	alerts, bytes, failover, suppressed, filtered, oversize atomic.Uint64
	backlog, overflow, unconfirmed, resent                  atomic.Uint64
	connected                                               atomic.Bool
	errs                                                    *prometheus.CounterVec
}

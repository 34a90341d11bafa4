package forwarder

import (
	"context"
	"crypto/tls"
	"encoding/json"
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
	buf        []byte
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

func (d *destination) run(ctx context.Context) error {
	defer func() {
		d.primary.snd.close()
		if d.fallback != nil {
			d.fallback.snd.close()
		}
		d.m.connected.Store(false)
	}()
	batch := 128
	if d.alertsRL != nil {
		// Keep a batch's wait under the ack deadline's keep-alive.
		batch = max(1, min(batch, int(d.cfg.RateLimit.AlertsPerSecond)))
	}
	if err := d.resume(ctx); err != nil {
		return err
	}
	return d.bus.Consume(ctx, bus.ConsumerConfig{
		Stream:  bus.StreamAlerts,
		Durable: d.consumer(),
		Batch:   batch,
		AckWait: time.Minute,
	}, d.log, d.handle)
}

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

// handle delivers one batch. It returns nil (the batch is acked) only after
// every alert in it was delivered, filtered out, suppressed as already
// sent, or dead-lettered as undecodable. While the receiver is down it
// keeps retrying the batch in hand, with backoff, and keeps the batch's
// ack deadline alive: no redelivery, no reordering behind it.
func (d *destination) handle(ctx context.Context, msgs []jetstream.Msg) error {
	stop := keepInProgress(msgs, 20*time.Second)
	defer stop()

	alerts := make([]*event.Alert, 0, len(msgs))
	for _, m := range msgs {
		a := new(event.Alert)
		if err := json.Unmarshal(m.Data(), a); err != nil {
			if err := d.bus.DeadLetter(ctx, "forwarder", err.Error(), m.Data(), ""); err != nil {
				return err
			}
			continue
		}
		if !d.pass(a) {
			d.m.filtered.Add(1)
			continue
		}
		alerts = append(alerts, a)
	}
	if len(alerts) == 0 {
		return nil
	}
	ids := make([]string, len(alerts))
	for i, a := range alerts {
		ids[i] = a.ID
	}
	seen, err := d.sent.seen(ids)
	if err != nil {
		return err
	}
	kept := alerts[:0]
	for i, a := range alerts {
		if seen[i] {
			d.m.suppressed.Add(1)
			continue
		}
		kept = append(kept, a)
	}
	alerts = kept
	if len(alerts) == 0 {
		return nil
	}
	// ids must line up with the alerts that are sent, not those fetched.
	ids = ids[:0]
	for _, a := range alerts {
		ids = append(ids, a.ID)
	}

	rendered := map[*link][][]byte{}
	render := func(l *link) [][]byte {
		if r, ok := rendered[l]; ok {
			return r
		}
		now := time.Now()
		out := make([][]byte, len(alerts))
		for i, a := range alerts {
			var cut bool
			out[i], cut = l.fmt.appendMessage(nil, a, now)
			if cut {
				d.m.oversize.Add(1)
			}
		}
		rendered[l] = out
		return out
	}

	backoff := bus.Backoff{Min: 100 * time.Millisecond, Max: d.cfg.BackoffMax}
	done, attempt := 0, 0
	for done < len(alerts) {
		l := d.pick()
		chunk := render(l)[done:]
		if d.alertsRL != nil || d.bytesRL != nil {
			// Paced: one message at a time, each after its tokens.
			chunk = chunk[:1]
			if err := d.wait(ctx, len(chunk[0])); err != nil {
				return err
			}
		}
		n, err := l.snd.send(ctx, chunk)
		d.m.connected.Store(l.snd.connected())
		if n > 0 && l == d.primary {
			d.recovered(l) // progress: a primary that delivers part of a batch is not down
		}
		if n > 0 {
			// Delivered: remember the ids before the batch is acked.
			if rerr := d.sent.record(ids[done : done+n]); rerr != nil {
				return rerr
			}
			bytes := 0
			for _, m := range chunk[:n] {
				bytes += len(m)
			}
			d.m.alerts.Add(uint64(n))
			d.m.bytes.Add(uint64(bytes))
			if l != d.primary {
				d.m.failover.Add(uint64(n))
			}
			done += n
			attempt = 0
		}
		if err == nil {
			d.recovered(l)
			continue
		}
		d.failed(l, err)
		if err := backoff.Sleep(ctx, attempt); err != nil {
			return err
		}
		attempt++
	}
	return nil
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

// keepInProgress tells JetStream every interval that msgs are still being
// worked on, so a batch waiting for a receiver is not redelivered behind
// our back. The returned func stops it.
func keepInProgress(msgs []jetstream.Msg, interval time.Duration) func() {
	msgs = slices.Clone(msgs) // the caller reuses its slice for the next fetch
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, m := range msgs {
					_ = m.InProgress()
				}
			}
		}
	}()
	return func() { close(done); <-exited }
}

// destMetrics are one destination's counters. The sent counts are atomics
// that the Prometheus CounterFuncs and Status both read, so the status page
// and /metrics agree without gathering the registry.
type destMetrics struct {
	alerts, bytes, failover, suppressed, filtered, oversize atomic.Uint64
	backlog, overflow                                       atomic.Uint64
	connected                                               atomic.Bool
	errs                                                    *prometheus.CounterVec
}

// Package forwarder sends alerts to the on-prem SIEM: for each configured
// destination a durable JetStream consumer on ALERTS
// (outpost-forwarder-<name>), a filter, the CEF encoder (forwarder/cef), a
// syslog format (RFC 5424 or RFC 3164) and a transport (tcp, tls, udp,
// relp) that is redialled with backoff.
//
// Delivery contract, per destination: alerts go out in stream order and
// are acked in JetStream, in that order, only once confirmed ("rsp 200"
// for relp; the kernel took the datagram for udp; for tcp and tls the
// peer's TCP acknowledged them and resend_window bytes after them, or the
// receiver answered a graceful close) and their ids were recorded in
// Badger (see sentIDs and deliver.go). A connection that fails, closes or
// stalls has everything unconfirmed written again, in order. While the
// receiver is unreachable the alerts in hand are retried forever (their
// ack deadlines kept alive) and the rest waits in JetStream, bounded by the
// ALERTS stream's limits; a destination that is down never holds up
// another one, nor ingest. A crash replays unacked alerts from the ack
// floor, in order: the ones whose ids were recorded are suppressed, the
// rest are sent again with the same CEF externalId.
package forwarder

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/state"
)

// Forwarder delivers ALERTS to every configured destination.
type Forwarder struct {
	cfg   Config
	bus   *bus.Bus
	log   *slog.Logger
	dests []*destination

	// monitorEvery is how often the backlog is measured.
	monitorEvery time.Duration
	streamFull   prometheus.Gauge
}

// New returns a forwarder for cfg.Destinations; cfg must have been
// validated. db holds the ids of alerts already sent (key prefix f/). New
// does no I/O beyond reading TLS files.
func New(cfg Config, version string, b *bus.Bus, db *state.DB, logger *slog.Logger, reg prometheus.Registerer) (*Forwarder, error) {
	f := &Forwarder{
		cfg: cfg, bus: b, log: logger.With("component", "forwarder"), monitorEvery: time.Second,
		streamFull: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_forwarder_alerts_stream_full",
			Help: "1 while the ALERTS stream is at 95% or more of its max_bytes: the oldest alerts are being dropped, delivered or not.",
		}),
	}
	byName := map[string]*Destination{}
	for i := range f.cfg.Destinations {
		byName[f.cfg.Destinations[i].Name] = &f.cfg.Destinations[i]
	}
	var collectors []prometheus.Collector
	for i := range f.cfg.Destinations {
		d := &f.cfg.Destinations[i]
		m, cs := newDestMetrics(d.Name)
		collectors = append(collectors, cs...)
		var fb *Destination
		if d.Fallback != "" {
			fb = byName[d.Fallback]
		}
		ds, err := newDestination(d, fb, &f.cfg, version, b, newSentIDs(db, d.Name, cfg.SentIDsTTL), logger, m)
		if err != nil {
			return nil, fmt.Errorf("forwarder.destinations[%s]: %w", d.Name, err)
		}
		enc := ds.enc
		collectors = append(collectors, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "outpost_forwarder_cef_truncations_total", Help: "CEF values truncated to the standard's length limits.",
			ConstLabels: prometheus.Labels{"destination": d.Name},
		}, func() float64 { return float64(enc.Truncations()) }))
		f.dests = append(f.dests, ds)
	}
	collectors = append(collectors, f.streamFull)
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering forwarder metrics: %w", err)
		}
	}
	return f, nil
}

func newDestMetrics(name string) (*destMetrics, []prometheus.Collector) {
	m := &destMetrics{}
	labels := prometheus.Labels{"destination": name}
	counter := func(metric, help string, v interface{ Load() uint64 }) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: metric, Help: help, ConstLabels: labels},
			func() float64 { return float64(v.Load()) })
	}
	m.errs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outpost_forwarder_errors_total", Help: "Failed dials, handshakes, writes and RELP responses, by type.", ConstLabels: labels,
	}, []string{"error_type"})
	for _, k := range []string{"dial", "tls", "write", "stalled", "read", "refused", "protocol"} {
		m.errs.WithLabelValues(k)
	}
	return m, []prometheus.Collector{
		counter("outpost_forwarder_sent_alerts_total", "Alerts delivered (to the destination or its fallback).", &m.alerts),
		counter("outpost_forwarder_sent_bytes_total", "Bytes of syslog messages delivered, framing excluded.", &m.bytes),
		counter("outpost_forwarder_resent_alerts_total", "Alerts written again on a new connection because the old one failed, stalled or closed before they were confirmed (tcp, tls).", &m.resent),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outpost_forwarder_unconfirmed_alerts", Help: "Alerts written to a tcp or tls connection and not yet confirmed delivered (held un-acked in ALERTS).", ConstLabels: labels,
		}, func() float64 { return float64(m.unconfirmed.Load()) }),
		counter("outpost_forwarder_failover_alerts_total", "Alerts delivered to the fallback while the destination was down.", &m.failover),
		counter("outpost_forwarder_suppressed_alerts_total", "Replayed alerts not sent again because their id was recorded as sent.", &m.suppressed),
		counter("outpost_forwarder_filtered_alerts_total", "Alerts below min_severity or without one of the tags.", &m.filtered),
		counter("outpost_forwarder_oversize_messages_total", "Messages cut to max_message_size.", &m.oversize),
		counter("outpost_forwarder_backlog_overflow_alerts_total", "Alerts the ALERTS stream dropped (max_bytes/max_age) before this destination got them.", &m.overflow),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outpost_forwarder_backlog_alerts", Help: "Alerts in ALERTS not yet delivered to the destination (pending plus in flight).", ConstLabels: labels,
		}, func() float64 { return float64(m.backlog.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outpost_forwarder_connected", Help: "1 while a connection to the destination (or its fallback) is open.", ConstLabels: labels,
		}, func() float64 {
			if m.connected.Load() {
				return 1
			}
			return 0
		}),
		m.errs,
	}
}

// Run consumes ALERTS for every destination until ctx ends. A destination
// that fails stops the others and Run returns its error.
func (f *Forwarder) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(f.dests))
	for _, d := range f.dests {
		wg.Go(func() {
			if err := d.run(ctx); err != nil {
				errc <- fmt.Errorf("destination %s: %w", d.cfg.Name, err)
				cancel()
			}
		})
	}
	wg.Go(func() { f.monitor(ctx) })
	wg.Wait()
	close(errc)
	return errors.Join(func() (errs []error) {
		for err := range errc {
			errs = append(errs, err)
		}
		return errs
	}()...)
}

// Status is one destination's link economy and backlog.
type Status struct {
	Name      string `json:"name"`
	Address   string `json:"address"`
	Transport string `json:"transport"`
	Fallback  string `json:"fallback,omitempty"`
	Connected bool   `json:"connected"`
	AlertsOut uint64 `json:"alerts_out"`
	BytesOut  uint64 `json:"bytes_out"`
	Failover  uint64 `json:"failover_alerts"`
	Suppress  uint64 `json:"suppressed_alerts"`
	Filtered  uint64 `json:"filtered_alerts"`
	Backlog   uint64 `json:"backlog_alerts"`
	Overflow  uint64 `json:"overflow_alerts"`
}

// Status returns every destination's counters, as of the last backlog
// measurement for Backlog.
func (f *Forwarder) Status() []Status {
	out := make([]Status, 0, len(f.dests))
	for _, d := range f.dests {
		m := d.m
		out = append(out, Status{
			Name: d.cfg.Name, Address: d.cfg.Address, Transport: d.cfg.Transport, Fallback: d.cfg.Fallback,
			Connected: m.connected.Load(), AlertsOut: m.alerts.Load(), BytesOut: m.bytes.Load(),
			Failover: m.failover.Load(), Suppress: m.suppressed.Load(), Filtered: m.filtered.Load(),
			Backlog: m.backlog.Load(), Overflow: m.overflow.Load(),
		})
	}
	return out
}

// SentBytes is the sum of bytes delivered over every destination.
func (f *Forwarder) SentBytes() uint64 {
	var n uint64
	for _, d := range f.dests {
		n += d.m.bytes.Load()
	}
	return n
}

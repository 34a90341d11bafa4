package syslog

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Values of the error_type label, besides the FrameError kinds.
const (
	errRFC5424 = "rfc5424" // an RFC 5424 message go-syslog rejected
	errRead    = "read"    // a socket read failed
	errAccept  = "accept"  // accepting a TCP connection failed
	errPublish = "publish" // the sink refused an event or a dead letter
)

// metrics are the source's Prometheus instruments. The component_* names
// follow Vector's instrumentation spec and are shared with the other
// sources, told apart by the component label; their help strings must stay
// identical across packages for one registry to accept them all.
type metrics struct {
	eventsUDP, eventsTCP prometheus.Counter
	bytesUDP, bytesTCP   prometheus.Counter
	errors               *prometheus.CounterVec
	fallback             prometheus.Counter
	openConns            prometheus.Gauge
	rejectedConns        prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	component := prometheus.Labels{"component": SourceName}
	events := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "outpost_component_received_events_total",
		Help:        "Events the component received and decoded.",
		ConstLabels: component,
	}, []string{"transport"})
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "outpost_component_received_bytes_total",
		Help:        "Raw bytes the component received, before framing and decoding.",
		ConstLabels: component,
	}, []string{"transport"})
	m := &metrics{
		eventsUDP: events.WithLabelValues("udp"),
		eventsTCP: events.WithLabelValues("tcp"),
		bytesUDP:  bytes.WithLabelValues("udp"),
		bytesTCP:  bytes.WithLabelValues("tcp"),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "outpost_component_errors_total",
			Help:        "Errors the component met, by error type.",
			ConstLabels: component,
		}, []string{"error_type"}),
		fallback: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_syslog_rfc3164_fallback_total",
			Help: "Messages without a valid PRI or timestamp, taken whole as the message (RFC 3164 §4.3).",
		}),
		openConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_syslog_open_connections",
			Help: "Open syslog TCP connections.",
		}),
		rejectedConns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_syslog_rejected_connections_total",
			Help: "Syslog TCP connections closed at once because max_connections were open.",
		}),
	}
	// Create every error series up front so a dashboard sees 0, not nothing.
	for _, t := range []string{KindOversize, KindBadLength, KindTruncated, errRFC5424, errRead, errAccept, errPublish} {
		m.errors.WithLabelValues(t)
	}
	if reg == nil {
		return m, nil
	}
	all := []prometheus.Collector{events, bytes, m.errors, m.fallback, m.openConns, m.rejectedConns}
	for i, c := range all {
		if err := reg.Register(c); err != nil {
			for _, done := range all[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	return m, nil
}

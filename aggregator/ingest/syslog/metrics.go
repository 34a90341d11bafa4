package syslog

import (
	"github.com/outpost-siem/outpost/aggregator/ingest/payload"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/ingest/instrument"
)

// Values of the error_type label, besides the FrameError kinds.
const (
	errRFC5424 = "rfc5424" // an RFC 5424 message go-syslog rejected
	errRead    = "read"    // a socket read failed
	errAccept  = "accept"  // accepting a TCP connection failed
	errPublish = "publish" // the sink refused an event or a dead letter
	// errFallback is a message taken whole as an RFC 3164 §4.3 fallback
	// (no valid PRI or timestamp): an event all the same.
	errFallback = "fallback"
	// errShutdownCut names the log line for lines the stop timeout cut; they
	// are counted in outpost_syslog_shutdown_cut_lines_total.
	errShutdownCut = "shutdown_cut"
	// errFrameTimeout is a TCP frame that did not arrive whole within
	// frame_timeout of its start (slowloris); the connection is closed.
	errFrameTimeout = "frame_timeout"
)

// metrics are the source's Prometheus instruments: the component_* ones
// every source shares (package instrument) and syslog's own.
type metrics struct {
	eventsUDP, bytesUDP prometheus.Counter
	// events and bytes of the stream transports: tcp, tls, relp
	events, bytes     map[string]prometheus.Counter
	tlsHandshake      *prometheus.CounterVec // failed handshakes, by reason
	tlsExpiry         *prometheus.GaugeVec   // the listener certificate's NotAfter
	tlsReloads        *prometheus.CounterVec // reloads of the TLS files, by result
	errors            *prometheus.CounterVec
	fallback          prometheus.Counter
	formats           *prometheus.CounterVec // messages read per payload format
	formatFallback    *prometheus.CounterVec // ... that the format's parser could not read
	openConns         prometheus.Gauge
	rejectedConns     *prometheus.CounterVec
	evictedConns      prometheus.Counter
	rejectedDatagrams *prometheus.CounterVec
	kernelDrops       prometheus.Counter
	shutdownCut       prometheus.Counter
	attrsDropped      prometheus.Counter
	component         *instrument.Component
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	transports := []string{"udp", "tcp", "tls", "relp"}
	c := instrument.NewComponent(SourceName, transports,
		[]string{KindOversize, KindBadLength, KindTruncated, KindRELP, KindRELPProtocol, errRFC5424, errRead, errAccept, errPublish, errFallback, errFrameTimeout})
	m := &metrics{
		eventsUDP: c.Events.WithLabelValues("udp"),
		bytesUDP:  c.Bytes.WithLabelValues("udp"),
		events:    map[string]prometheus.Counter{},
		bytes:     map[string]prometheus.Counter{},
		errors:    c.Errors,
		tlsHandshake: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_syslog_tls_handshake_errors_total",
			Help: "TLS handshakes refused or failed on the syslog tls and relp listeners, by reason: timeout, not_tls, no_client_certificate, unknown_ca, expired_certificate, bad_certificate, client_not_allowed, protocol_version, remote_alert, other.",
		}, []string{"reason"}),
		tlsExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "outpost_syslog_tls_certificate_expiry_timestamp_seconds",
			Help: "When the certificate a syslog TLS listener presents expires (its NotAfter, Unix seconds), by listen address.",
		}, []string{"listener"}),
		tlsReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_syslog_tls_reloads_total",
			Help: "Reloads of the syslog TLS listeners' certificate, key and CA files that changed something (ok) or failed (error: the listener kept its files).",
		}, []string{"result"}),
		component: c,
		fallback: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_syslog_rfc3164_fallback_total",
			Help: "Messages without a valid PRI or timestamp, taken whole as the message (RFC 3164 §4.3).",
		}),
		formats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_syslog_formats_total",
			Help: "Messages whose text was read as a structured format (cef, leef, kv, json), by format.",
		}, []string{"format"}),
		formatFallback: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_syslog_parse_fallback_total",
			Help: "Messages that looked like a structured format (cef, leef, kv, json) but did not parse as it: kept as events with their raw text.",
		}, []string{"format"}),
		openConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_syslog_open_connections",
			Help: "Open syslog TCP connections.",
		}),
		rejectedConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_syslog_rejected_connections_total",
			Help: "Syslog TCP connections closed at once, by reason: max_connections, max_connections_per_source or not_allowed.",
		}, []string{"reason"}),
		rejectedDatagrams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_syslog_rejected_datagrams_total",
			Help: "Syslog UDP datagrams dropped, by reason: not_allowed.",
		}, []string{"reason"}),
		kernelDrops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_syslog_udp_kernel_drops_total",
			Help: "Syslog UDP datagrams the kernel dropped because the socket's receive buffer was full (SO_RXQ_OVFL); reported with the next datagram read.",
		}),
		evictedConns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_syslog_evicted_connections_total",
			Help: "Idle syslog TCP connections closed to make room for a new one when max_connections were open.",
		}),
		attrsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_syslog_attributes_dropped_total",
			Help: "Attributes of syslog events left off the bus because no loaded rule reads them (ingest.syslog.attributes: read).",
		}),
		shutdownCut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_syslog_shutdown_cut_lines_total",
			Help: "Syslog TCP lines received at shutdown but not published: the stop timeout ended the drain first.",
		}),
	}
	for _, t := range transports[1:] {
		m.events[t], m.bytes[t] = c.Events.WithLabelValues(t), c.Bytes.WithLabelValues(t)
	}
	for _, reason := range tlsReasons {
		m.tlsHandshake.WithLabelValues(reason)
	}
	m.tlsReloads.WithLabelValues("ok")
	m.tlsReloads.WithLabelValues("error")
	for _, reason := range []string{rejectFull, rejectPerSource, rejectNotAllow} {
		m.rejectedConns.WithLabelValues(reason)
	}
	m.rejectedDatagrams.WithLabelValues(rejectNotAllow)
	for _, f := range payload.Formats {
		m.formats.WithLabelValues(f)
		m.formatFallback.WithLabelValues(f)
	}
	if err := c.Register(reg, m.fallback, m.formats, m.formatFallback, m.openConns, m.rejectedConns, m.rejectedDatagrams, m.kernelDrops, m.evictedConns, m.shutdownCut, m.attrsDropped,
		m.tlsHandshake, m.tlsExpiry, m.tlsReloads); err != nil {
		return nil, err
	}
	return m, nil
}

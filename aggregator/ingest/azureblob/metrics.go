package azureblob

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// SourceName is the component label of the source's metrics and the
// source of its dead letters (deadletter.azure_blob).
const SourceName = "azure_blob"

// Values of the error_type label.
const (
	errJSON     = "json"     // a record that is not valid JSON
	errSchema   = "schema"   // valid JSON of an unexpected shape
	errOversize = "oversize" // a record (line or block) longer than max_record_size
	errLayout   = "layout"   // a block blob whose committed blocks changed under its checkpoint
	errList     = "list"     // listing a container failed
	errRead     = "read"     // reading a blob (properties, block list, range) failed
	errPublish  = "publish"  // JetStream did not ack a batch, or a dead letter
	errState    = "state"    // reading or writing a checkpoint failed
)

// Values of the transport label: how the blob is read.
const (
	transportAppend = "append_blob"
	transportBlock  = "block_blob"
)

// metrics are the source's Prometheus instruments. The component_* names
// and help strings are shared with the other sources (see the syslog
// package); one registry accepts them all only while they stay identical.
type metrics struct {
	events, bytes *prometheus.CounterVec
	errors        *prometheus.CounterVec
	polls         *prometheus.CounterVec
	blobs         prometheus.Counter
	checkpoints   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	component := prometheus.Labels{"component": SourceName}
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "outpost_component_received_events_total",
			Help:        "Events the component received and decoded.",
			ConstLabels: component,
		}, []string{"transport"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "outpost_component_received_bytes_total",
			Help:        "Raw bytes the component received, before framing and decoding.",
			ConstLabels: component,
		}, []string{"transport"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "outpost_component_errors_total",
			Help:        "Errors the component met, by error type.",
			ConstLabels: component,
		}, []string{"error_type"}),
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_azure_blob_polls_total",
			Help: "Polls of a storage account, by result (ok or error).",
		}, []string{"result"}),
		blobs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_azure_blob_blobs_read_total",
			Help: "Blobs that had new data and were read.",
		}),
		checkpoints: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_azure_blob_checkpoints_total",
			Help: "Checkpoints advanced after JetStream acked the events before them.",
		}),
	}
	for _, t := range []string{transportAppend, transportBlock} {
		m.events.WithLabelValues(t)
		m.bytes.WithLabelValues(t)
	}
	for _, t := range []string{errJSON, errSchema, errOversize, errLayout, errList, errRead, errPublish, errState} {
		m.errors.WithLabelValues(t)
	}
	m.polls.WithLabelValues("ok")
	m.polls.WithLabelValues("error")
	if reg == nil {
		return m, nil
	}
	all := []prometheus.Collector{m.events, m.bytes, m.errors, m.polls, m.blobs, m.checkpoints}
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

package azureblob

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/ingest/instrument"
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

// metrics are the source's Prometheus instruments: the component_* ones
// every source shares (package instrument) and the Blob reader's own.
type metrics struct {
	events, bytes *prometheus.CounterVec
	errors        *prometheus.CounterVec
	polls         *prometheus.CounterVec
	blobs         prometheus.Counter
	checkpoints   prometheus.Counter
	component     *instrument.Component
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	c := instrument.NewComponent(SourceName,
		[]string{transportAppend, transportBlock},
		[]string{errJSON, errSchema, errOversize, errLayout, errList, errRead, errPublish, errState})
	m := &metrics{
		events: c.Events, bytes: c.Bytes, errors: c.Errors, component: c,
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
	m.polls.WithLabelValues("ok")
	m.polls.WithLabelValues("error")
	if err := c.Register(reg, m.polls, m.blobs, m.checkpoints); err != nil {
		return nil, err
	}
	return m, nil
}

package bus

import (
	"context"
	"errors"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the bus's own instruments, shared by every path that
// publishes through it (the Publisher, PublishEvents, DeadLetter), so one
// counter covers each thing whichever stage sent it.
type metrics struct {
	published   *prometheus.CounterVec // stream
	deadLetters *prometheus.CounterVec // stage, reason
	ackErrors   *prometheus.CounterVec // stream
	pubErrors   *prometheus.CounterVec // stream, error_type
}

func newMetrics() *metrics {
	return &metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_bus_published_messages_total",
			Help: "Messages acknowledged by JetStream, by stream.",
		}, []string{"stream"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_dead_letters_total",
			Help: "Messages stored in DEADLETTER, by the stage that sent them and reason class (late, undecodable, oversize, bad_length, truncated, json, schema, layout, unparsable).",
		}, []string{"stage", "reason"}),
		ackErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_bus_ack_errors_total",
			Help: "Acks JetStream did not confirm within the timeout (retried; the message is redelivered if none is confirmed), by stream.",
		}, []string{"stream"}),
		pubErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_bus_publish_errors_total",
			Help: "Publishes JetStream did not ack, by stream and error_type (timeout, unavailable, rejected, other); each is retried by its stage.",
		}, []string{"stream", "error_type"}),
	}
}

func (b *Bus) metrics() *metrics {
	b.mOnce.Do(func() { b.m = newMetrics() })
	return b.m
}

// RegisterMetrics registers the bus's metrics on reg. Without it they are
// kept but not exported.
func (b *Bus) RegisterMetrics(reg prometheus.Registerer) error {
	m := b.metrics()
	for _, c := range []prometheus.Collector{m.published, m.deadLetters, m.ackErrors, m.pubErrors} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Dead-letter stages: the `source` argument of DeadLetter, with "late"
// (the rule filter's late events) folded into "filter".
var deadLetterStages = map[string]bool{
	"syslog": true, "azure_blob": true, "filter": true, "windows": true, "forwarder": true,
}

// Reason classes a source's dead letter may start with ("oversize: …").
var sourceReasons = map[string]bool{
	"oversize": true, "bad_length": true, "truncated": true, // syslog framing, and any oversized event
	"json": true, "schema": true, "layout": true, // azure_blob records
}

// deadLetterLabels maps DeadLetter's free-text source and reason onto
// bounded label values: stage is one of deadLetterStages or "other";
// reason is "late", "undecodable" (a message of Outpost's own that did not
// decode: filter, windows, forwarder), one of sourceReasons, or
// "unparsable" (any other input a source could not parse).
func deadLetterLabels(source, reason string) (stage, class string) {
	if source == "late" {
		return "filter", "late"
	}
	stage = source
	if !deadLetterStages[stage] {
		stage = "other"
	}
	switch stage {
	case "filter", "windows", "forwarder":
		return stage, "undecodable"
	}
	if kind, _, ok := strings.Cut(reason, ":"); ok && sourceReasons[kind] {
		return stage, kind
	}
	return stage, "unparsable"
}

// publishOptions bound every asynchronous publish of every stage (the
// publisher, PublishEvents, the rule filter's matches, the windows'
// alerts) by PublishTimeout: JetStream does not answer a publish it could
// not write (a full disk), and a future without a timeout would wait
// forever. Every failed async publish is counted here, once.
func (b *Bus) publishOptions() []jetstream.JetStreamOpt {
	return []jetstream.JetStreamOpt{
		jetstream.WithPublishAsyncTimeout(b.cfg.PublishTimeout),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			b.countPublishError(m.Subject, err)
		}),
	}
}

// streamOf names the stream of a subject, for labels.
func streamOf(subject string) string {
	prefix, _, _ := strings.Cut(subject, ".")
	switch prefix {
	case "events":
		return StreamEvents
	case "matches":
		return StreamMatches
	case "alerts":
		return StreamAlerts
	case "deadletter":
		return StreamDeadLetter
	case "statelog":
		return StreamStateLog
	}
	return "other"
}

func (b *Bus) countPublishError(subject string, err error) {
	if errors.Is(err, context.Canceled) {
		return // a stop, not a fault
	}
	var apiErr *jetstream.APIError
	kind := "other"
	switch {
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout), errors.Is(err, context.DeadlineExceeded):
		kind = "timeout"
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrDisconnected):
		kind = "unavailable"
	case errors.As(err, &apiErr):
		kind = "rejected"
	}
	b.metrics().pubErrors.WithLabelValues(streamOf(subject), kind).Inc()
}

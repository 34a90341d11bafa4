// Package instrument holds what every source reports the same way: the
// component metrics named after Vector's instrumentation spec, and a log
// limiter that keeps repeated problems from flooding the log.
package instrument

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Component is the shared metrics of one source, told apart from the
// others by the component label. Every source registers the same names with
// the same help strings in one registry, so they are defined once, here.
type Component struct {
	Events *prometheus.CounterVec // outpost_component_received_events_total{transport}
	Bytes  *prometheus.CounterVec // outpost_component_received_bytes_total{transport}
	Errors *prometheus.CounterVec // outpost_component_errors_total{error_type}
}

// NewComponent returns the metrics of the component named name, with the
// series of each transport and error type created up front so a dashboard
// sees 0, not nothing.
func NewComponent(name string, transports, errorTypes []string) *Component {
	labels := prometheus.Labels{"component": name}
	c := &Component{
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "outpost_component_received_events_total",
			Help:        "Events the component received and decoded.",
			ConstLabels: labels,
		}, []string{"transport"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "outpost_component_received_bytes_total",
			Help:        "Raw bytes the component received, before framing and decoding.",
			ConstLabels: labels,
		}, []string{"transport"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "outpost_component_errors_total",
			Help:        "Errors the component met, by error type.",
			ConstLabels: labels,
		}, []string{"error_type"}),
	}
	for _, t := range transports {
		c.Events.WithLabelValues(t)
		c.Bytes.WithLabelValues(t)
	}
	for _, t := range errorTypes {
		c.Errors.WithLabelValues(t)
	}
	return c
}

// Received returns the events and bytes received so far, all transports.
func (c *Component) Received() (events, bytes float64) {
	return sumCounters(c.Events), sumCounters(c.Bytes)
}

func sumCounters(v *prometheus.CounterVec) float64 {
	ch := make(chan prometheus.Metric, 16)
	go func() { v.Collect(ch); close(ch) }()
	total := 0.0
	for m := range ch {
		var pb dto.Metric
		if m.Write(&pb) == nil {
			total += pb.GetCounter().GetValue()
		}
	}
	return total
}

// Register registers the component's metrics and extra on reg, all or
// none. A nil reg registers nothing.
func (c *Component) Register(reg prometheus.Registerer, extra ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	all := append([]prometheus.Collector{c.Events, c.Bytes, c.Errors}, extra...)
	for i, col := range all {
		if err := reg.Register(col); err != nil {
			for _, done := range all[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("registering metrics: %w", err)
		}
	}
	return nil
}

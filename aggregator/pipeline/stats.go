package pipeline

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Stats is the link economy: what came in, what went out.
type Stats struct {
	EventsIn  float64 // syslog messages received
	BytesIn   float64 // bytes of input received
	AlertsOut float64 // alerts written to the destination
	BytesOut  float64 // bytes written to the destination
}

// Ratio is BytesIn / BytesOut, or 0 before anything went out.
func (s Stats) Ratio() float64 {
	if s.BytesOut == 0 {
		return 0
	}
	return s.BytesIn / s.BytesOut
}

// Stats reads the counters from the metrics registry, so the numbers the
// demo and the status page show are the ones Prometheus scrapes.
func (p *Pipeline) Stats() Stats {
	sums := sumCounters(p.reg,
		"outpost_component_received_events_total",
		"outpost_component_received_bytes_total",
		"outpost_forwarder_sent_alerts_total",
		"outpost_forwarder_sent_bytes_total")
	return Stats{
		EventsIn:  sums[0],
		BytesIn:   sums[1],
		AlertsOut: sums[2],
		BytesOut:  sums[3],
	}
}

// sumCounters sums every series of each named counter family.
func sumCounters(g prometheus.Gatherer, names ...string) []float64 {
	out := make([]float64, len(names))
	mfs, err := g.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		for i, n := range names {
			if mf.GetName() != n {
				continue
			}
			for _, m := range mf.GetMetric() {
				out[i] += m.GetCounter().GetValue()
			}
		}
	}
	return out
}

package pipeline

import (
	"github.com/prometheus/client_golang/prometheus"
)

// sumCounters sums every series of each named counter or gauge family.
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
				out[i] += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return out
}

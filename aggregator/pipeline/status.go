package pipeline

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/forwarder"
)

// Status is what `outpost status` shows and /status serves: the link
// economy (what came in against what went out, per destination) and each
// destination's backlog.
type Status struct {
	EventsIn     float64            `json:"events_in"`
	BytesIn      float64            `json:"bytes_in"`
	AlertsOut    uint64             `json:"alerts_out"`
	BytesOut     uint64             `json:"bytes_out"`
	Ratio        float64            `json:"reduction_ratio"` // bytes in per byte out; 0 before anything went out
	Destinations []forwarder.Status `json:"destinations"`
	// Problems are what keeps the pipeline from making progress now (the
	// reasons /readyz fails); empty when ready.
	Problems []string `json:"problems,omitempty"`
}

// received sums the events and bytes every source received.
func (p *Pipeline) received() (events, bytes float64) {
	for _, c := range p.sources {
		e, b := c.Received()
		events, bytes = events+e, bytes+b
	}
	return events, bytes
}

// Status reports the link economy now.
func (p *Pipeline) Status() Status {
	s := Status{Destinations: p.forwarder.Status()}
	s.EventsIn, s.BytesIn = p.received()
	for _, err := range p.problems() {
		s.Problems = append(s.Problems, err.Error())
	}
	for _, d := range s.Destinations {
		s.AlertsOut += d.AlertsOut
		s.BytesOut += d.BytesOut
	}
	if s.BytesOut > 0 {
		s.Ratio = s.BytesIn / float64(s.BytesOut)
	}
	return s
}

// registerLinkRatio exposes bytes in per byte out as a gauge.
func (p *Pipeline) registerLinkRatio() error {
	return p.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "outpost_link_reduction_ratio",
		Help: "Bytes received by the sources per byte sent to the SIEM (all destinations), since start; 0 before anything was sent.",
	}, func() float64 {
		out := p.forwarder.SentBytes()
		if out == 0 {
			return 0
		}
		_, in := p.received()
		return in / float64(out)
	}))
}

func (p *Pipeline) serveStatus(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(p.Status())
}

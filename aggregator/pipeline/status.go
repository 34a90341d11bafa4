package pipeline

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

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
}

// ingestCounters keeps references to the sources' received events/bytes
// counters as they are registered, so the ratio gauge can read them
// without gathering the registry it is itself registered in (a GaugeFunc
// that calls Gather on its own registry recurses).
type ingestCounters struct {
	prometheus.Registerer
	events, bytes []prometheus.Collector
}

func (c *ingestCounters) Register(col prometheus.Collector) error {
	if err := c.Registerer.Register(col); err != nil {
		return err
	}
	ch := make(chan *prometheus.Desc, 16)
	go func() { col.Describe(ch); close(ch) }()
	for d := range ch {
		s := d.String()
		switch {
		case strings.Contains(s, `"outpost_component_received_bytes_total"`):
			c.bytes = append(c.bytes, col)
		case strings.Contains(s, `"outpost_component_received_events_total"`):
			c.events = append(c.events, col)
		}
	}
	return nil
}

func (c *ingestCounters) MustRegister(cs ...prometheus.Collector) {
	for _, col := range cs {
		if err := c.Register(col); err != nil {
			panic(err)
		}
	}
}

// sum collects cs and adds up their counter values.
func sum(cs []prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 64)
	go func() {
		for _, c := range cs {
			c.Collect(ch)
		}
		close(ch)
	}()
	total := 0.0
	for m := range ch {
		var pb dto.Metric
		if m.Write(&pb) == nil && pb.Counter != nil {
			total += pb.Counter.GetValue()
		}
	}
	return total
}

// Status reports the link economy now.
func (p *Pipeline) Status() Status {
	s := Status{Destinations: p.forwarder.Status()}
	if p.ingest != nil {
		s.EventsIn, s.BytesIn = sum(p.ingest.events), sum(p.ingest.bytes)
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
func (p *Pipeline) registerLinkRatio() {
	p.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "outpost_link_reduction_ratio",
		Help: "Bytes received by the sources per byte sent to the SIEM (all destinations), since start; 0 before anything was sent.",
	}, func() float64 {
		out := p.forwarder.SentBytes()
		if out == 0 || p.ingest == nil {
			return 0
		}
		return sum(p.ingest.bytes) / float64(out)
	}))
}

func (p *Pipeline) serveStatus(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(p.Status())
}

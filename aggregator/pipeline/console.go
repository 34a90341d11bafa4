package pipeline

import (
	"context"
	"encoding/json"
	"io/fs"
	"math"
	"net/http"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sync/singleflight"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/console"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/filter"
)

// The status page's data: what the sources saw per host, an hour of
// samples, and the snapshot /api/console serves.
const (
	historyLength  = time.Hour // samples kept, every http.sample_every
	maxHosts       = 10000
	latestAlerts   = 200
	latestDead     = 20
	deadSampleLen  = 1024
	snapshotMaxAge = time.Second // a snapshot is built at most this often
)

// hostTracker remembers, per source and host, when the last event was
// received and how many came. It is bounded to maxHosts, and the hosts it
// knows keep their place: when it is full, the host first seen most
// recently gives way to a new one. A flood of made-up names (an RFC 3164
// host field over UDP is anyone's to write) churns among itself and cannot
// push out the hosts seen before it — least of all a silent one, which the
// page must flag. A host silent for a week is forgotten. Names are cut to
// 255 bytes (RFC 1035) and copied, so an entry never holds a message.
type hostTracker struct {
	mu      sync.Mutex
	m       map[hostKey]*hostSeen
	order   []hostKey // first seen, oldest first; may hold forgotten keys
	dropped uint64    // new hosts that could not be kept: the table was full
	forgot  time.Time // when forget last walked the table
}

type hostKey struct{ source, host string }

type hostSeen struct {
	last time.Time
	n    uint64
}

const (
	maxHostName = 255
	hostForget  = 7 * 24 * time.Hour
)

func newHostTracker() *hostTracker { return &hostTracker{m: make(map[hostKey]*hostSeen)} }

func (t *hostTracker) see(source, host string, at time.Time) {
	if len(host) > maxHostName {
		host = strings.ToValidUTF8(host[:maxHostName], "")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.m[hostKey{source, host}]; s != nil {
		s.n++
		if at.After(s.last) {
			s.last = at
		}
		return
	}
	if at.Sub(t.forgot) > time.Minute {
		t.forgot = at
		t.forget(at)
	}
	if len(t.m) >= maxHosts {
		// The newest gives way: pop keys until one is still known.
		for len(t.order) > 0 {
			k := t.order[len(t.order)-1]
			t.order = t.order[:len(t.order)-1]
			if _, ok := t.m[k]; ok {
				delete(t.m, k)
				break
			}
		}
		t.dropped++
	}
	k := hostKey{strings.Clone(source), strings.Clone(host)}
	t.m[k] = &hostSeen{last: at, n: 1}
	t.order = append(t.order, k)
}

// forget drops hosts silent for hostForget; see calls it once a minute
// (it walks the table).
func (t *hostTracker) forget(now time.Time) {
	kept := t.order[:0]
	for _, k := range t.order {
		if s, ok := t.m[k]; ok {
			if now.Sub(s.last) > hostForget {
				delete(t.m, k)
				continue
			}
			kept = append(kept, k)
		}
	}
	clear(t.order[len(kept):])
	t.order = kept
}

func (t *hostTracker) list(now time.Time, staleAfter time.Duration) []console.SourceHost {
	t.mu.Lock()
	out := make([]console.SourceHost, 0, len(t.m))
	for k, s := range t.m {
		out = append(out, console.SourceHost{Source: k.source, Host: k.host, LastEvent: s.last, Events: s.n,
			Stale: now.Sub(s.last) > staleAfter})
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b console.SourceHost) int {
		if a.Stale != b.Stale {
			if a.Stale {
				return -1
			}
			return 1
		}
		if c := strings.Compare(a.Source, b.Source); c != 0 {
			return c
		}
		return strings.Compare(a.Host, b.Host)
	})
	return out
}

// trackedSink is the syslog source's sink: the publisher, noting each
// event's host on the way.
type trackedSink struct {
	*bus.Publisher
	hosts *hostTracker
}

func (s trackedSink) Publish(ctx context.Context, ev *event.Event) error {
	s.hosts.see(ev.Source, ev.Host, ev.Received)
	return s.Publisher.Publish(ctx, ev)
}

// trackedBatchSink is the Azure source's.
type trackedBatchSink struct {
	*bus.Bus
	hosts *hostTracker
}

func (s trackedBatchSink) PublishEvents(ctx context.Context, evs []*event.Event) error {
	err := s.Bus.PublishEvents(ctx, evs)
	if err == nil {
		for _, ev := range evs {
			s.hosts.see(ev.Source, ev.Host, ev.Received)
		}
	}
	return err
}

// sample is the cumulative counters at one time.
type sample struct {
	at       time.Time
	eventsIn map[string]float64 // by source/transport
	bytesBy  map[string]float64 // by source/transport
	bytesIn  float64
	bytesOut float64
	alerts   float64
}

// consoleState is the page's state in the pipeline.
type consoleState struct {
	started time.Time
	hosts   *hostTracker

	mu      sync.Mutex
	samples []sample // oldest first, at most historySamples+1
	reload  struct {
		at     time.Time
		result string
		errors []string
	}
	snap   *console.Snapshot // the last built, reused for snapshotMaxAge
	snapAt time.Time
	builds singleflight.Group
	// the stage counters at rateAt, for stageRates
	rateAt   time.Time
	rateLast [3]float64
}

func newConsoleState() *consoleState {
	return &consoleState{started: time.Now(), hosts: newHostTracker()}
}

// noteReload records a rules reload for the page.
func (c *consoleState) noteReload(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reload.at = time.Now()
	c.reload.result, c.reload.errors = "ok", nil
	if err != nil {
		c.reload.result = "rejected"
		c.reload.errors = strings.Split(err.Error(), "\n")
		if len(c.reload.errors) > 50 {
			c.reload.errors = c.reload.errors[:50]
		}
	}
}

// metricSums gathers the registry once into name → label set → value.
type metricSums map[string][]*dto.Metric

func gatherMetrics(g prometheus.Gatherer) metricSums {
	mfs, _ := g.Gather() // a partial result is still worth showing
	out := make(metricSums, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf.GetMetric()
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// sum adds a metric's samples whose labels match all of want.
func (s metricSums) sum(name string, want ...string) float64 {
	var v float64
	for _, m := range s[name] {
		ok := true
		for i := 0; i+1 < len(want); i += 2 {
			if label(m, want[i]) != want[i+1] {
				ok = false
			}
		}
		if ok {
			v += value(m)
		}
	}
	return v
}

// by sums a metric by one label's values.
func (s metricSums) by(name, lbl string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range s[name] {
		out[label(m, lbl)] += value(m)
	}
	return out
}

// takeSample records the counters now; runConsole calls it every step.
func (p *Pipeline) takeSample(now time.Time) {
	ms := gatherMetrics(p.reg)
	s := sample{at: now, eventsIn: map[string]float64{}, bytesIn: ms.sum("outpost_component_received_bytes_total"),
		bytesOut: float64(p.forwarder.SentBytes()), alerts: ms.sum("outpost_alerts_raised_total")}
	s.bytesBy = map[string]float64{}
	for _, m := range ms["outpost_component_received_events_total"] {
		s.eventsIn[label(m, "component")+"/"+label(m, "transport")] += value(m)
	}
	for _, m := range ms["outpost_component_received_bytes_total"] {
		s.bytesBy[label(m, "component")+"/"+label(m, "transport")] += value(m)
	}
	c := p.console
	c.mu.Lock()
	c.samples = append(c.samples, s)
	if keep := int(historyLength/p.cfg.HTTP.SampleEvery) + 1; len(c.samples) > keep {
		c.samples = slices.Delete(c.samples, 0, len(c.samples)-keep)
	}
	c.mu.Unlock()
}

// runConsole samples the counters every http.sample_every until ctx ends.
func (p *Pipeline) runConsole(ctx context.Context) error {
	p.takeSample(time.Now())
	t := time.NewTicker(p.cfg.HTTP.SampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			p.takeSample(now)
		}
	}
}

// series turns the samples into per-second rates between neighbours.
func (c *consoleState) series(step time.Duration) console.Series {
	c.mu.Lock()
	samples := slices.Clone(c.samples)
	c.mu.Unlock()
	s := console.Series{Step: step.Seconds(), EventsIn: map[string][]float64{}, BytesInBy: map[string][]float64{}}
	keys := map[string]bool{}
	for _, x := range samples {
		for k, v := range x.eventsIn {
			if v > 0 {
				keys[k] = true
			}
		}
	}
	for i := 1; i < len(samples); i++ {
		a, b := samples[i-1], samples[i]
		dt := b.at.Sub(a.at).Seconds()
		if dt <= 0 {
			continue
		}
		rate := func(x, y float64) float64 { return math.Max(0, y-x) / dt }
		s.Times = append(s.Times, b.at.Unix())
		for k := range keys {
			s.EventsIn[k] = append(s.EventsIn[k], rate(a.eventsIn[k], b.eventsIn[k]))
			s.BytesInBy[k] = append(s.BytesInBy[k], rate(a.bytesBy[k], b.bytesBy[k]))
		}
		in, out := rate(a.bytesIn, b.bytesIn), rate(a.bytesOut, b.bytesOut)
		s.BytesIn, s.BytesOut = append(s.BytesIn, in), append(s.BytesOut, out)
		s.Alerts = append(s.Alerts, rate(a.alerts, b.alerts))
		r := 0.0
		if out > 0 {
			r = in / out
		}
		s.Ratio = append(s.Ratio, r)
	}
	return s
}

// serveConsole answers GET /api/console.
func (p *Pipeline) serveConsole(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	snap := p.ConsoleSnapshot(ctx)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(snap)
}

// ConsoleSnapshot is what the status page shows now, built at most once a
// second: concurrent callers share one build (which runs on its own
// context, bounded, so a caller that hangs up cancels only its wait), and a
// build that did not finish is not kept.
func (p *Pipeline) ConsoleSnapshot(ctx context.Context) *console.Snapshot {
	c := p.console
	c.mu.Lock()
	if c.snap != nil && time.Since(c.snapAt) < snapshotMaxAge {
		s := c.snap
		c.mu.Unlock()
		return s
	}
	c.mu.Unlock()
	ch := c.builds.DoChan("snapshot", func() (any, error) {
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		s := p.buildSnapshot(bctx)
		if bctx.Err() == nil {
			c.mu.Lock()
			c.snap, c.snapAt = s, time.Now()
			c.mu.Unlock()
		}
		return s, nil
	})
	select {
	case r := <-ch:
		return r.Val.(*console.Snapshot)
	case <-ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.snap != nil {
			return c.snap
		}
		return &console.Snapshot{Now: time.Now(), Version: p.version}
	}
}

func (p *Pipeline) buildSnapshot(ctx context.Context) *console.Snapshot {
	now := time.Now()
	ms := gatherMetrics(p.reg)
	st := p.Status()
	s := &console.Snapshot{Now: now, Version: p.version, Started: p.console.started,
		StaleAfter: p.cfg.HTTP.StaleAfter.Seconds(), Series: p.console.series(p.cfg.HTTP.SampleEvery)}
	s.Top = console.Top{Ready: len(st.Problems) == 0, Problems: st.Problems, EventsIn: st.EventsIn, BytesIn: st.BytesIn,
		AlertsOut: st.AlertsOut, BytesOut: st.BytesOut, Ratio: st.Ratio,
		DeadLetters: ms.sum("outpost_dead_letters_total")}
	s.Sources = p.console.hosts.list(now, p.cfg.HTTP.StaleAfter)
	for _, h := range s.Sources {
		if h.Stale {
			s.Top.StaleSources++
		}
	}

	// Rules.
	p.rulesMu.Lock()
	set := p.rules
	p.rulesMu.Unlock()
	matches, alerts := ms.by("outpost_filter_matches_total", "rule"), ms.by("outpost_alerts_raised_total", "rule")
	s.Rules.Loaded = len(set.Rules)
	for _, r := range set.Rules {
		s.Rules.PerRule = append(s.Rules.PerRule, console.RuleRow{ID: r.ID, Title: r.Title, Kind: string(r.Kind),
			Severity: r.Severity, Matches: matches[r.ID], Alerts: uint64(alerts[r.ID])})
	}
	p.console.mu.Lock()
	if rl := p.console.reload; !rl.at.IsZero() {
		at := rl.at
		s.Rules.LastReload, s.Rules.LastResult, s.Rules.LastErrors = &at, rl.result, rl.errors
	}
	p.console.mu.Unlock()

	// Forwarding.
	errs := ms.by("outpost_forwarder_errors_total", "destination")
	for _, d := range st.Destinations {
		s.Destinations = append(s.Destinations, console.Destination{Name: d.Name, Address: d.Address, Transport: d.Transport,
			Connected: d.Connected, AlertsOut: d.AlertsOut, BytesOut: d.BytesOut, Backlog: d.Backlog,
			OldestAge: p.oldestBacklog(ctx, d.Name, now), Failover: d.Failover, Errors: errs[d.Name]})
		s.Top.Backlog += d.Backlog
	}

	// Dead letters.
	for _, m := range ms["outpost_dead_letters_total"] {
		if v := value(m); v > 0 {
			s.DeadLetters.Counts = append(s.DeadLetters.Counts, console.DeadCount{Stage: label(m, "stage"), Reason: label(m, "reason"), Count: v})
		}
	}
	s.DeadLetters.Latest = p.latestDeadLetters(ctx)
	s.Alerts = p.latestAlerts(ctx)

	// The pipeline.
	s.Pipeline = p.pipelineState(ctx, ms, s.Series)
	return s
}

// streamTail reads up to n of a stream's newest messages, newest first.
func (p *Pipeline) streamTail(ctx context.Context, stream string, n uint64, fn func(*jetstream.RawStreamMsg)) {
	st, err := p.bus.JetStream().Stream(ctx, stream)
	if err != nil {
		return
	}
	info, err := st.Info(ctx)
	if err != nil || info.State.Msgs == 0 {
		return
	}
	for seq, read := info.State.LastSeq, uint64(0); seq >= info.State.FirstSeq && seq > 0 && read < n; seq-- {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			continue // deleted (interior delete) or gone
		}
		fn(m)
		read++
	}
}

func (p *Pipeline) latestAlerts(ctx context.Context) []console.AlertRow {
	var out []console.AlertRow
	p.streamTail(ctx, bus.StreamAlerts, latestAlerts, func(m *jetstream.RawStreamMsg) {
		var a event.Alert
		if json.Unmarshal(m.Data, &a) != nil {
			return
		}
		out = append(out, console.AlertRow{ID: a.ID, Rule: a.RuleID, Title: a.Title, Severity: a.Severity,
			Key: a.Key, Count: a.Count, Time: a.LastSeen})
	})
	return out
}

func (p *Pipeline) latestDeadLetters(ctx context.Context) []console.DeadLetter {
	var out []console.DeadLetter
	p.streamTail(ctx, bus.StreamDeadLetter, latestDead, func(m *jetstream.RawStreamMsg) {
		d := console.DeadLetter{Time: m.Time, Stage: strings.TrimPrefix(m.Subject, "deadletter."),
			Reason: m.Header.Get("Outpost-Reason"), Sender: m.Header.Get("Outpost-Sender")}
		data := m.Data[:min(len(m.Data), deadSampleLen)]
		d.Sample = strings.ToValidUTF8(string(data), "\uFFFD")
		if !utf8.Valid(data) || len(m.Data) > deadSampleLen {
			d.Sample += " …"
		}
		out = append(out, d)
	})
	return out
}

// oldestBacklog is the age of the oldest alert a destination has not
// delivered: the message after its consumer's ack floor.
func (p *Pipeline) oldestBacklog(ctx context.Context, dest string, now time.Time) float64 {
	js := p.bus.JetStream()
	cons, err := js.Consumer(ctx, bus.StreamAlerts, "outpost-forwarder-"+dest)
	if err != nil {
		return 0
	}
	info, err := cons.Info(ctx)
	if err != nil || info.NumPending+uint64(info.NumAckPending) == 0 {
		return 0
	}
	st, err := js.Stream(ctx, bus.StreamAlerts)
	if err != nil {
		return 0
	}
	first := info.AckFloor.Stream + 1
	for seq := first; seq < first+16; seq++ { // skip a few filtered or deleted ones
		if m, err := st.GetMsg(ctx, seq); err == nil {
			return math.Max(0, now.Sub(m.Time).Seconds())
		}
	}
	return 0
}

func (p *Pipeline) pipelineState(ctx context.Context, ms metricSums, series console.Series) console.Pipeline {
	out := console.Pipeline{LiveKeys: ms.sum("outpost_windows_live_keys"), RSSBytes: ms.sum("process_resident_memory_bytes"),
		MemoryLimit: float64(debug.SetMemoryLimit(-1))}
	if out.MemoryLimit == math.MaxInt64 {
		out.MemoryLimit = 0
	}
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	out.HeapBytes = float64(mem.HeapAlloc)
	// Badger's own Size is refreshed once a minute: the files say it now.
	_ = filepath.WalkDir(filepath.Join(p.cfg.DataDir, "state"), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				out.BadgerBytes += float64(info.Size())
			}
		}
		return nil
	})

	streams := map[string]uint64{}
	for _, name := range []string{bus.StreamEvents, bus.StreamMatches, bus.StreamAlerts, bus.StreamDeadLetter, bus.StreamStateLog} {
		st, err := p.bus.JetStream().Stream(ctx, name)
		if err != nil {
			continue
		}
		info, err := st.Info(ctx)
		if err != nil {
			continue
		}
		row := console.Stream{Name: name, Msgs: info.State.Msgs, Bytes: info.State.Bytes, MaxBytes: info.Config.MaxBytes}
		if row.MaxBytes > 0 {
			row.Use = float64(row.Bytes) / float64(row.MaxBytes)
		}
		streams[name] = info.State.Msgs
		out.Streams = append(out.Streams, row)
	}
	last := func(v []float64) float64 {
		if len(v) == 0 {
			return 0
		}
		return v[len(v)-1]
	}
	var in float64
	for _, v := range series.EventsIn {
		in += last(v)
	}
	rates := p.stageRates(ms)
	var backlog float64
	for _, d := range p.forwarder.Status() {
		backlog += float64(d.Backlog)
	}
	filterLag, windowsLag := float64(streams[bus.StreamEvents]), float64(streams[bus.StreamMatches])
	if p.cfg.Windows.IsFused() {
		// Fused, the rule filter acks its events once the windows'
		// checkpoint holds their matches: those delivered to it are the
		// windows' backlog (bar the few batches being evaluated), those
		// not yet delivered the filter's.
		if cons, err := p.bus.JetStream().Consumer(ctx, bus.StreamEvents, filter.Durable); err == nil {
			if info, err := cons.Info(ctx); err == nil {
				filterLag = float64(info.NumPending)
				windowsLag += float64(info.NumAckPending)
			}
		}
	}
	out.Stages = []console.Stage{
		{Name: "ingest", Rate: in, Lag: ms.sum("outpost_bus_publish_queue_events")},
		{Name: "filter", Rate: rates[0], Lag: filterLag},
		{Name: "windows", Rate: rates[1], Lag: windowsLag, Watermark: p.windowsWatermark()},
		{Name: "forwarder", Rate: rates[2], Lag: backlog},
	}
	return out
}

// stageRates are the filter's events, the windows' matches and the
// forwarder's alerts per second over the last step.
func (p *Pipeline) stageRates(now metricSums) [3]float64 {
	c := p.console
	c.mu.Lock()
	defer c.mu.Unlock()
	var out [3]float64
	cur := [3]float64{now.sum("outpost_filter_events_total"), now.sum("outpost_windows_matches_total"),
		now.sum("outpost_forwarder_sent_alerts_total")}
	t := time.Now()
	if !c.rateAt.IsZero() {
		if dt := t.Sub(c.rateAt).Seconds(); dt > 0 {
			for i := range out {
				out[i] = math.Max(0, cur[i]-c.rateLast[i]) / dt
			}
		}
	}
	if t.Sub(c.rateAt) >= p.cfg.HTTP.SampleEvery || c.rateAt.IsZero() {
		c.rateAt, c.rateLast = t, cur
	}
	return out
}

func (p *Pipeline) windowsWatermark() *time.Time {
	w := p.windows.WatermarkTime()
	if w.IsZero() {
		return nil
	}
	return &w
}

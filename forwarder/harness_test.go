package forwarder

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/ingest/syslog"
	"github.com/outpost-siem/outpost/aggregator/state"
)

// harness is an embedded JetStream and a Badger database in a temp dir:
// what a forwarder needs, without the rest of the pipeline.
type harness struct {
	t   testing.TB
	dir string
	bus *bus.Bus
	db  *state.DB
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	return openHarness(t, t.TempDir())
}

// openHarness opens JetStream and Badger in dir, which may hold the state
// a crashed harness left (see crash).
func openHarness(t testing.TB, dir string) *harness {
	t.Helper()
	var bc bus.Config
	if err := bc.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := bus.Open(context.Background(), bc, dir, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	var sc state.Config
	_ = sc.Validate()
	db, err := state.Open(dir+"/state", sc, testLogger())
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	h := &harness{t: t, dir: dir, bus: b, db: db}
	t.Cleanup(h.crash)
	return h
}

// crash closes JetStream and Badger under whatever still runs on them, as
// a process that dies does: nothing it had not acked or written is. A
// forwarder started on the harness must be stopped after crash.
func (h *harness) crash() {
	if h.bus == nil {
		return
	}
	h.bus.Close()
	_ = h.db.Close()
	h.bus, h.db = nil, nil
}

func testLogger() *slog.Logger {
	if testing.Verbose() && os.Getenv("OUTPOST_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// alerts returns n alerts with ids a0000.. and severity 7.
func testAlerts(n int) []event.Alert {
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	out := make([]event.Alert, n)
	for i := range out {
		out[i] = event.Alert{
			ID: fmt.Sprintf("a%05d", i), RuleID: "ssh.bruteforce", Title: "SSH brute force",
			Severity: 7, Tags: []string{"T1110"}, Kind: "threshold", Key: "src_ip=203.0.113.5", Count: 5,
			FirstSeen: t0, LastSeen: t0.Add(time.Minute),
			Fields: map[string]string{"src_ip": "203.0.113.5", "user": "root"},
		}
	}
	return out
}

func (h *harness) publish(alerts ...event.Alert) {
	h.t.Helper()
	js := h.bus.JetStream()
	for _, a := range alerts {
		data, err := json.Marshal(a)
		if err != nil {
			h.t.Fatal(err)
		}
		m := nats.NewMsg("alerts.high")
		m.Header.Set(jetstream.MsgIDHeader, a.ID)
		m.Data = data
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = js.PublishMsg(ctx, m)
		cancel()
		if err != nil {
			h.t.Fatal(err)
		}
	}
}

// testConfig is a validated forwarder config for the given destinations.
func testConfig(t *testing.T, dests ...Destination) Config {
	t.Helper()
	for i := range dests {
		if dests[i].BackoffMax == 0 {
			dests[i].BackoffMax = 200 * time.Millisecond
		}
		if dests[i].WriteTimeout == 0 {
			dests[i].WriteTimeout = 2 * time.Second
		}
		if dests[i].DialTimeout == 0 {
			dests[i].DialTimeout = 2 * time.Second
		}
	}
	cfg := Config{Hostname: "outpost-test", Destinations: dests}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// start runs a forwarder until the test ends (or stop is called).
func (h *harness) start(cfg Config) (*Forwarder, *prometheus.Registry, func()) {
	h.t.Helper()
	reg := prometheus.NewRegistry()
	f, err := New(cfg, "test", h.bus, h.db, testLogger(), reg)
	if err != nil {
		h.t.Fatal(err)
	}
	f.monitorEvery = 100 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					h.t.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				h.t.Error("forwarder did not stop within 30s")
			}
		})
	}
	h.t.Cleanup(stop)
	return f, reg, stop
}

var externalIDRe = regexp.MustCompile(`externalId=(\S+)`)

// checkAll asserts that every one of want's ids arrived in msgs, that
// nothing else did, and that duplicates are exact (same externalId, same
// CEF). It returns the number of duplicates.
func checkAll(t *testing.T, msgs []string, want int) int {
	t.Helper()
	seen := map[string]int{}
	for _, m := range msgs {
		id := externalIDRe.FindStringSubmatch(m)
		if id == nil {
			t.Errorf("message without externalId: %q", m)
			continue
		}
		seen[id[1]]++
	}
	dups := 0
	for i := range want {
		id := fmt.Sprintf("a%05d", i)
		switch n := seen[id]; {
		case n == 0:
			t.Errorf("alert %s never arrived", id)
		case n > 1:
			dups += n - 1
		}
		delete(seen, id)
	}
	for id := range seen {
		t.Errorf("unexpected alert %s", id)
	}
	return dups
}

// checkAllCut is checkAll over a link whose connections were cut or timed
// out mid-write: such a connection may end in a truncated message (a frame
// cut short, without its externalId), whose alert is sent again whole.
// Those are dropped and counted (a syslog message without an externalId
// can only be one); checkAll still requires every alert whole.
func checkAllCut(t *testing.T, msgs []string, want int) (dups, cut int) {
	t.Helper()
	kept := msgs[:0:0]
	for _, m := range msgs {
		if strings.HasPrefix(m, "<") && !strings.Contains(m, "externalId=") { // every whole message has one
			cut++
			continue
		}
		kept = append(kept, m)
	}
	return checkAll(t, kept, want), cut
}

// waitFor polls cond every 10ms for up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// streamReceiver is a syslog receiver over TCP or TLS that keeps frames
// (LF or octet-counted, detected per frame).
type streamReceiver struct {
	ln    net.Listener
	mu    sync.Mutex
	msgs  []string
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func listenStream(t testing.TB, addr string, tc *tls.Config) *streamReceiver {
	t.Helper()
	var ln net.Listener
	var err error
	for range 50 { // the port of a restarted receiver may be in TIME_WAIT briefly
		if tc != nil {
			ln, err = tls.Listen("tcp", addr, tc)
		} else {
			ln, err = net.Listen("tcp", addr)
		}
		if err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	r := &streamReceiver{ln: ln, conns: map[net.Conn]bool{}}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.conns[c] = true
			r.mu.Unlock()
			r.wg.Add(1)
			go r.serve(c)
		}
	}()
	t.Cleanup(r.close)
	return r
}

func (r *streamReceiver) addr() string { return r.ln.Addr().String() }

func (r *streamReceiver) serve(c net.Conn) {
	defer r.wg.Done()
	defer c.Close()
	f := syslog.NewFramer(c, 64<<10)
	for {
		msg, err := f.Next()
		var fe *syslog.FrameError
		if errors.As(err, &fe) {
			continue
		}
		if err != nil {
			return
		}
		r.mu.Lock()
		r.msgs = append(r.msgs, string(msg))
		r.mu.Unlock()
	}
}

func (r *streamReceiver) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

func (r *streamReceiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func (r *streamReceiver) close() {
	_ = r.ln.Close()
	r.mu.Lock()
	for c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// distinctIDs counts distinct externalIds in msgs.
func distinctIDs(msgs []string) int {
	ids := map[string]bool{}
	for _, m := range msgs {
		if id := externalIDRe.FindStringSubmatch(m); id != nil {
			ids[id[1]] = true
		}
	}
	return len(ids)
}

func newHarnessStart(t *testing.T, h *harness, dests ...Destination) (*Forwarder, *prometheus.Registry, func()) {
	t.Helper()
	return h.start(testConfig(t, dests...))
}

// mustCollector finds the single series of a metric family in reg (test
// helper: the sum over its series).
func mustCollector(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	return gathererCollector{reg, name}
}

type gathererCollector struct {
	reg  *prometheus.Registry
	name string
}

func (g gathererCollector) Describe(chan<- *prometheus.Desc) {}
func (g gathererCollector) Collect(ch chan<- prometheus.Metric) {
	sum := 0.0
	mfs, _ := g.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != g.name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(g.name, "sum", nil, nil), prometheus.UntypedValue, sum)
}

// errCount is outpost_forwarder_errors_total{error_type=kind}, summed over
// destinations.
func errCount(t *testing.T, reg *prometheus.Registry, kind string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "outpost_forwarder_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "error_type" && l.GetValue() == kind {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

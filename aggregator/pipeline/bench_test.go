package pipeline

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/ingest/syslog"
	"github.com/outpost-siem/outpost/forwarder"
	"github.com/outpost-siem/outpost/forwarder/receiver"
)

// BenchmarkSyslogToEvents measures durable ingest: RFC 5424 sshd lines of
// about 150 bytes over one loopback TCP connection (octet-counted), parsed,
// normalized and acked by JetStream into EVENTS on the embedded server with
// file storage. One op is one event.
func BenchmarkSyslogToEvents(b *testing.B) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var bc bus.Config
	bc.Streams.Events.MaxBytes = 8 << 30
	if err := bc.Validate(); err != nil {
		b.Fatal(err)
	}
	bs, err := bus.Open(ctx, bc, b.TempDir(), log)
	if err != nil {
		b.Fatal(err)
	}
	defer bs.Close()
	reg := prometheus.NewRegistry()
	pub, err := bus.NewPublisher(bs, bus.PublisherConfig{}, log, reg)
	if err != nil {
		b.Fatal(err)
	}
	src, err := syslog.New(syslog.Config{TCP: []string{"127.0.0.1:0"}}, pub, log, reg)
	if err != nil {
		b.Fatal(err)
	}
	if err := src.Listen(); err != nil {
		b.Fatal(err)
	}
	go pub.Run(ctx)
	go src.Run(ctx)
	_, tcp := src.Addrs()
	conn, err := net.Dial("tcp", tcp[0].String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	w := bufio.NewWriterSize(conn, 64<<10)

	// The input is built before the clock starts, as a separate sender
	// process (bench/loadgen) would have it: the benchmark times Outpost.
	ts := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC).Format(time.RFC3339)
	var input []byte
	for i := range b.N {
		msg := fmt.Sprintf("<38>1 %s web-01 sshd 4242 - - Failed password for root from 203.0.%d.%d port %d ssh2", ts, i>>8&255, i&255, 1024+i%60000)
		input = fmt.Appendf(input, "%d %s", len(msg), msg)
	}
	startAndSend(b, w, input)
	deadline := time.Now().Add(5 * time.Minute)
	for sumCounters(reg, "outpost_bus_published_events_total")[0] < float64(b.N) {
		if time.Now().After(deadline) {
			b.Fatal("events not all acked by JetStream within 5 minutes")
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// startAndSend starts the clock and writes the prepared input (messages of
// about 150 bytes) to the connection.
func startAndSend(b *testing.B, w *bufio.Writer, input []byte) {
	b.Helper()
	b.SetBytes(150)
	b.ReportAllocs()
	b.ResetTimer()
	if _, err := w.Write(input); err != nil {
		b.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPipeline measures the whole appliance with the shipped pack:
// syslog over one loopback TCP connection → EVENTS → rule filter → MATCHES
// → windows (Badger, fsync per batch) → ALERTS → CEF to a TCP receiver.
// The input is sshd logon failures and successes from 1,000 addresses,
// ~150 bytes each, event time advancing 1 ms per line. One op is one
// event; the clock stops when every event was evaluated and every match
// applied.
func BenchmarkPipeline(b *testing.B) {
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer siem.Close()
	cfg := &Config{DataDir: b.TempDir()}
	cfg.HTTP.Listen = "off"
	cfg.Ingest.Syslog = syslog.Config{TCP: []string{"127.0.0.1:0"}}
	cfg.Forwarder = forwarder.Config{Hostname: "bench", Destinations: []forwarder.Destination{{Address: siem.Addr().String()}}}
	if os.Getenv("OUTPOST_BENCH_NOSYNC") != "" {
		f := false
		cfg.State.SyncWrites = &f
	}
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p, err := Open(ctx, cfg, "bench", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	_, tcp := p.SyslogAddrs()
	conn, err := net.Dial("tcp", tcp[0].String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	w := bufio.NewWriterSize(conn, 64<<10)
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	var input []byte // built before the clock starts, as in BenchmarkSyslogToEvents
	for i := range b.N {
		outcome := "Failed"
		if i%10 == 0 {
			outcome = "Accepted"
		}
		msg := fmt.Sprintf("<38>1 %s web-01 sshd 4242 - - %s password for root from 203.0.%d.%d port %d ssh2",
			base.Add(time.Duration(i)*time.Millisecond).Format(time.RFC3339Nano), outcome, i%1000>>8, i%1000&255, 1024+i%60000)
		input = fmt.Appendf(input, "%d %s", len(msg), msg)
	}
	startAndSend(b, w, input)
	deadline := time.Now().Add(10 * time.Minute)
	for {
		s := sumCounters(p.reg, "outpost_filter_events_total", "outpost_filter_matches_total", "outpost_windows_matches_total")
		if s[0] >= float64(b.N) && s[1] == s[2] {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("not settled after 10 minutes: %v", s)
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkLatency measures receipt-to-CEF latency under load: sshd lines
// at a fixed rate (OUTPOST_BENCH_RATE, default 15,000/s — about half the
// whole pipeline's sustained rate with the shipped pack) from
// OUTPOST_BENCH_IPS addresses (1,000) for OUTPOST_BENCH_SECONDS (10), with a
// probe line among them every 10 ms that a match rule turns into an alert.
// A probe carries its send time as its event time, and the receiver notes
// when its CEF arrives (rt= is the event time in ms), so each probe gives
// one send-to-CEF latency. The loop is bounded by that time, not by b.N.
func BenchmarkLatency(b *testing.B) {
	rate := 15000
	if v, err := strconv.Atoi(os.Getenv("OUTPOST_BENCH_RATE")); err == nil && v > 0 {
		rate = v
	}
	// Distinct attacking addresses (OUTPOST_BENCH_IPS, 1,000 by default):
	// with many, every event touches window state of its own.
	ips := 1000
	if v, err := strconv.Atoi(os.Getenv("OUTPOST_BENCH_IPS")); err == nil && v > 0 && v <= 1<<24 {
		ips = v
	}
	// The shipped pack plus a probe rule.
	rulesDir := b.TempDir()
	if err := os.CopyFS(rulesDir, os.DirFS("../../rules/pack")); err != nil {
		b.Fatal(err)
	}
	probe := "rules:\n  - {id: probe, title: Probe, kind: match, severity: 1, condition: 'app == \"probe\"', fields: [msg_id]}\n"
	if err := os.WriteFile(filepath.Join(rulesDir, "probe.yaml"), []byte(probe), 0o644); err != nil {
		b.Fatal(err)
	}

	siem, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer siem.Close()
	var latencies []time.Duration
	var received atomic.Int64 // probes whose CEF arrived
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		c, err := siem.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		sc := bufio.NewScanner(c)
		sc.Buffer(make([]byte, 64<<10), 64<<10)
		for sc.Scan() {
			line := sc.Text()
			if !strings.Contains(line, "|probe|") {
				continue
			}
			i := strings.Index(line, "|rt=") // rt is the first extension key
			if i < 0 {
				continue
			}
			ms, err := strconv.ParseInt(strings.Fields(line[i+4:])[0], 10, 64)
			if err != nil {
				continue
			}
			latencies = append(latencies, time.Since(time.UnixMilli(ms)))
			received.Add(1)
		}
	}()

	cfg := &Config{DataDir: b.TempDir()}
	cfg.HTTP.Listen = "off"
	cfg.Rules.Dir = rulesDir
	cfg.Ingest.Syslog = syslog.Config{TCP: []string{"127.0.0.1:0"}}
	cfg.Forwarder = forwarder.Config{Hostname: "bench", Destinations: []forwarder.Destination{{Address: siem.Addr().String()}}}
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p, err := Open(ctx, cfg, "bench", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	_, tcp := p.SyslogAddrs()
	conn, err := net.Dial("tcp", tcp[0].String())
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(conn, 64<<10)
	b.ResetTimer()
	runFor := 10 * time.Second // OUTPOST_BENCH_SECONDS, at most 600
	if v, err := strconv.Atoi(os.Getenv("OUTPOST_BENCH_SECONDS")); err == nil && v > 0 && v <= 600 {
		runFor = time.Duration(v) * time.Second
	}
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	sent, probes := 0, 0
	for now := range tick.C {
		if now.Sub(start) > runFor {
			break
		}
		due := int(float64(rate) * now.Sub(start).Seconds())
		for ; sent < due; sent++ {
			a := sent % ips
			msg := fmt.Sprintf("<38>1 %s web-01 sshd 4242 - - Failed password for root from 10.%d.%d.%d port %d ssh2",
				time.Now().UTC().Format(time.RFC3339Nano), a>>16, a>>8&255, a&255, 1024+sent%60000)
			fmt.Fprintf(w, "%d %s", len(msg), msg)
		}
		msg := fmt.Sprintf("<38>1 %s web-02 probe 1 p%d - probe", time.Now().UTC().Format(time.RFC3339Nano), probes)
		fmt.Fprintf(w, "%d %s", len(msg), msg)
		probes++
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	tick.Stop()
	// Let the last probes through (the slowest ones, often), then stop
	// everything. A probe that never arrives is reported, not hidden.
	deadline := time.Now().Add(60 * time.Second)
	for received.Load() < int64(probes) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	b.StopTimer()
	conn.Close()
	cancel()
	<-done
	siem.Close()
	<-collected
	if len(latencies) == 0 {
		b.Fatalf("no probe alert arrived (sent %d events, %d probes; counters %v)", sent, probes,
			sumCounters(p.reg, "outpost_component_received_events_total", "outpost_component_errors_total", "outpost_syslog_rfc3164_fallback_total", "outpost_bus_published_events_total", "outpost_filter_events_total", "outpost_filter_late_events_total", "outpost_filter_matches_total", "outpost_windows_matches_total", "outpost_alerts_raised_total", "outpost_forwarder_sent_alerts_total"))
	}
	slices.Sort(latencies)
	pct := func(q float64) time.Duration { return latencies[min(len(latencies)-1, int(q*float64(len(latencies))))] }
	b.ReportMetric(float64(sent)/runFor.Seconds(), "events/s")
	b.ReportMetric(float64(len(latencies)), "probes")
	if len(latencies) != probes {
		b.Errorf("%d probes sent, %d alerts received", probes, len(latencies))
	}
	b.ReportMetric(float64(pct(0.50).Milliseconds()), "p50-ms")
	b.ReportMetric(float64(pct(0.99).Milliseconds()), "p99-ms")
}

package pipeline

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/go-syslog/v3/rfc5424"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/ingest/syslog"
	"github.com/outpost-siem/outpost/forwarder"
	"github.com/outpost-siem/outpost/forwarder/receiver"
)

// These tests run the real appliance: embedded NATS with JetStream on disk,
// Badger in a temp dir, syslog listeners and a TCP "SIEM" on 127.0.0.1.

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

func testConfig(t *testing.T, dataDir, siemAddr string) *Config {
	t.Helper()
	cfg := &Config{DataDir: dataDir}
	cfg.HTTP.Listen = "off"
	cfg.Ingest.Syslog = syslog.Config{UDP: []string{"127.0.0.1:0"}, TCP: []string{"127.0.0.1:0"}}
	cfg.Forwarder = forwarder.Config{
		Hostname: "outpost-test",
		Destinations: []forwarder.Destination{{
			Address:    siemAddr,
			BackoffMax: 300 * time.Millisecond,
		}},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// running is a pipeline running in the background of a test.
type running struct {
	*Pipeline
	stop func()
	udp  string
	tcp  string
}

func start(t *testing.T, cfg *Config) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p, err := Open(ctx, cfg, "test", testLogger(t))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	udp, tcp := p.SyslogAddrs()
	stopped := false
	r := &running{Pipeline: p, udp: udp[0].String(), tcp: tcp[0].String()}
	r.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("pipeline did not stop within 30s")
		}
	}
	t.Cleanup(r.stop)
	return r
}

// counter sums a counter family, optionally only the series with label=value.
func (r *running) counter(name string) float64 { return sumCounters(r.reg, name)[0] }

// waitSettled waits until the rule filter has evaluated events events and
// the windows have applied every match the filter published.
func (r *running) waitSettled(t *testing.T, events int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d events through the rule filter", events), func() bool {
		return r.counter("outpost_filter_events_total") == float64(events)
	})
	waitFor(t, "every match applied by the windows", func() bool {
		return r.counter("outpost_windows_matches_total") == r.counter("outpost_filter_matches_total")
	})
}

// waitDrained waits until EVENTS and MATCHES, work queues, are empty: the
// windows acked every batch (fused, the rule filter its events) once a
// checkpoint held it.
func (r *running) waitDrained(ctx context.Context, t *testing.T) {
	t.Helper()
	js := r.bus.JetStream()
	for _, name := range []string{bus.StreamEvents, bus.StreamMatches} {
		waitFor(t, name+" drained", func() bool {
			st, err := js.Stream(ctx, name)
			return err == nil && st.CachedInfo().State.Msgs == 0
		})
	}
}

// waitFor polls cond every 20ms for up to 20s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sshFail(at time.Time, ip string, port int) string {
	return fmt.Sprintf("<38>1 %s web-01 sshd 4242 - - Failed password for root from %s port %d ssh2", at.Format(time.RFC3339), ip, port)
}

func send(t *testing.T, network, addr string, frames ...string) {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, f := range frames {
		if _, err := io.WriteString(c, f); err != nil {
			t.Fatal(err)
		}
	}
}

func octet(msg string) string { return fmt.Sprintf("%d %s", len(msg), msg) }

var evidenceIDs = regexp.MustCompile(`cs4=[^ ]+`)

func TestEndToEnd(t *testing.T) {
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer siem.Close()
	p := start(t, testConfig(t, t.TempDir(), siem.Addr().String()))

	// Benign traffic first: logons that succeed, failures from many
	// addresses (never five from one), other programs. None of it may
	// produce an alert.
	var benign []string
	for i := 0; i < 40; i++ {
		at := t0.Add(time.Duration(i) * time.Second)
		benign = append(benign,
			fmt.Sprintf("<38>1 %s web-01 sshd 77 - - Accepted publickey for alice from 10.1.0.%d port 5000 ssh2", at.Format(time.RFC3339), i),
			sshFail(at, fmt.Sprintf("10.2.0.%d", i), 6000),
			fmt.Sprintf("<30>%s web-01 cron[12]: (root) CMD (run-parts /etc/cron.hourly)", at.Format(time.RFC3339)))
	}
	var lf []string
	for _, b := range benign {
		lf = append(lf, b+"\n")
	}
	send(t, "tcp", p.tcp, lf...)
	p.waitSettled(t, 120)
	time.Sleep(300 * time.Millisecond)
	if got := siem.Messages(); len(got) != 0 {
		t.Fatalf("benign traffic raised alerts: %q", got)
	}

	// The brute force, over every framing and transport: five failures
	// from 203.0.113.5 within 40 s, in event time.
	attacker := "203.0.113.5"
	send(t, "tcp", p.tcp, octet(sshFail(t0.Add(100*time.Second), attacker, 40001)), octet(sshFail(t0.Add(110*time.Second), attacker, 40002)))
	send(t, "tcp", p.tcp, sshFail(t0.Add(120*time.Second), attacker, 40003)+"\n", sshFail(t0.Add(130*time.Second), attacker, 40004)+"\r\n")
	send(t, "udp", p.udp, sshFail(t0.Add(140*time.Second), attacker, 40005))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := siem.Wait(ctx, 1)
	if err != nil {
		t.Fatalf("no alert arrived: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if got = siem.Messages(); len(got) != 1 {
		t.Fatalf("got %d messages, want exactly 1: %q", len(got), got)
	}

	// The syslog frame: RFC 5424, facility local4, severity err (CEF 8).
	msg, err := rfc5424.NewParser().Parse([]byte(got[0]))
	if err != nil {
		t.Fatalf("not RFC 5424: %v: %q", err, got[0])
	}
	sm := msg.(*rfc5424.SyslogMessage)
	if *sm.Priority != 20*8+3 || *sm.Hostname != "outpost-test" || *sm.Appname != "outpost" || *sm.MsgID != "CEF" {
		t.Errorf("syslog header: pri %d host %s app %s msgid %s", *sm.Priority, *sm.Hostname, *sm.Appname, *sm.MsgID)
	}

	// The CEF, exactly; the evidence ids are random per event, so they are
	// checked apart.
	cef := *sm.Message
	ids := evidenceIDs.FindString(cef)
	if n := strings.Count(ids, ",") + 1; n != 5 {
		t.Errorf("evidence lists %d event ids, want 5: %s", n, ids)
	}
	cef = evidenceIDs.ReplaceAllString(cef, "cs4=<ids>")
	golden := readGolden(t, "testdata/e2e_brute_force.cef", cef)
	if cef != golden {
		t.Errorf("CEF mismatch\n got: %s\nwant: %s", cef, golden)
	}
}

var update = flag.Bool("update", false, "rewrite the golden files")

// readGolden returns the golden file's content; with -update it writes got
// there first.
func readGolden(t *testing.T, path, got string) string {
	t.Helper()
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	return strings.TrimSuffix(string(b), "\n")
}

// A threshold window half filled before a restart is completed after it:
// the window state is in Badger, the pipeline's progress in JetStream. A
// graceful stop checkpoints and acks everything: nothing is handed again
// after the restart. Both with MATCHES between the rule filter and the
// windows and fused.
func TestRestartKeepsWindowState(t *testing.T) {
	for _, fused := range []bool{false, true} {
		t.Run(fmt.Sprint("fused=", fused), func(t *testing.T) { testRestartKeepsWindowState(t, fused) })
	}
}

func testRestartKeepsWindowState(t *testing.T, fused bool) {
	config := func(dir, siem string) *Config {
		cfg := testConfig(t, dir, siem)
		cfg.Windows.Fused = &fused
		return cfg
	}
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer siem.Close()
	dir := t.TempDir()
	attacker := "198.51.100.9"

	p1 := start(t, config(dir, siem.Addr().String()))
	send(t, "tcp", p1.tcp, octet(sshFail(t0, attacker, 1)), octet(sshFail(t0.Add(5*time.Second), attacker, 2)), octet(sshFail(t0.Add(10*time.Second), attacker, 3)))
	p1.waitSettled(t, 3)
	// One attacker on one host: a key in each rule the failures match
	// (ssh-brute-force, password-spray, brute-force-then-success by address,
	// log-source-silent by host).
	keys := sumCounters(p1.reg, "outpost_windows_live_keys")[0]
	if keys != 4 {
		t.Errorf("outpost_windows_live_keys = %v, want 4", keys)
	}
	p1.stop()

	p2 := start(t, config(dir, siem.Addr().String()))
	waitFor(t, "the live keys recounted from Badger after the restart", func() bool {
		return sumCounters(p2.reg, "outpost_windows_live_keys")[0] == keys
	})
	time.Sleep(time.Second) // a nak'ed batch would be handed again by now
	if n := sumCounters(p2.reg, "outpost_filter_events_total")[0]; n != 0 {
		t.Errorf("%v events evaluated again after a graceful restart: the stop did not ack them", n)
	}
	send(t, "tcp", p2.tcp, octet(sshFail(t0.Add(15*time.Second), attacker, 4)), octet(sshFail(t0.Add(20*time.Second), attacker, 5)))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := siem.Wait(ctx, 1); err != nil {
		t.Fatalf("no alert after the restart: %v", err)
	}
	// Two more failures after the alert must not raise a second one.
	send(t, "tcp", p2.tcp, octet(sshFail(t0.Add(25*time.Second), attacker, 6)), octet(sshFail(t0.Add(30*time.Second), attacker, 7)))
	p2.waitSettled(t, 4)
	time.Sleep(300 * time.Millisecond)
	got := siem.Messages()
	if len(got) != 1 {
		t.Fatalf("got %d alerts, want exactly 1: %q", len(got), got)
	}
	if !strings.Contains(got[0], "cnt=5 ") {
		t.Errorf("alert does not count the 5 events across the restart: %s", got[0])
	}
}

// An alert raised while the SIEM is unreachable waits in JetStream and is
// delivered when the SIEM comes back on the same address.
func TestReceiverDownThenBack(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now

	p := start(t, testConfig(t, t.TempDir(), addr))
	attacker := "192.0.2.77"
	for i := range 5 {
		send(t, "udp", p.udp, sshFail(t0.Add(time.Duration(i)*time.Second), attacker, 100+i))
	}
	waitFor(t, "the alert to be raised", func() bool { return p.counter("outpost_alerts_raised_total") == 1 })
	waitFor(t, "the forwarder to fail to dial", func() bool { return p.counter("outpost_forwarder_errors_total") >= 2 })

	siem, err := receiver.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer siem.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := siem.Wait(ctx, 1)
	if err != nil {
		t.Fatalf("the alert never arrived after the SIEM came back: %v", err)
	}
	if !strings.Contains(got[0], "|ssh-brute-force|") {
		t.Errorf("unexpected message: %s", got[0])
	}
}

// With nats.url set, Outpost uses that server (standing in for an external
// cluster) and starts none of its own; the streams are created there.
func TestExternalNATS(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	defer ns.Shutdown()

	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer siem.Close()
	cfg := testConfig(t, t.TempDir(), siem.Addr().String())
	cfg.NATS.URL = ns.ClientURL()
	p := start(t, cfg)
	for i := range 5 {
		send(t, "tcp", p.tcp, octet(sshFail(t0.Add(time.Duration(i)*time.Second), "192.0.2.200", 100+i)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := siem.Wait(ctx, 1); err != nil {
		t.Fatalf("no alert through the external server: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "jetstream")); !os.IsNotExist(err) {
		t.Errorf("an embedded JetStream store was created in the data dir (err=%v)", err)
	}
	jsz, err := ns.Jsz(&server.JSzOptions{Streams: true})
	if err != nil {
		t.Fatal(err)
	}
	if jsz.Streams != 5 {
		t.Errorf("external server has %d streams, want 5 (EVENTS, MATCHES, ALERTS, DEADLETTER, STATELOG)", jsz.Streams)
	}
}

// When the windows cannot get an alert acked (ALERTS is gone), the batch's
// state is not committed; once ALERTS is back, the batch and any applied on
// top of it are applied again from Badger, and the alert is raised exactly
// once, counting every event. Over MATCHES the windows take their batches
// again; fused, the rule filter evaluates its events again.
func TestWindowsRetryAfterFailedAlertPublish(t *testing.T) {
	for _, fused := range []bool{false, true} {
		t.Run(fmt.Sprint("fused=", fused), func(t *testing.T) { testWindowsRetryAfterFailedAlertPublish(t, fused) })
	}
}

// startWithoutAlerts starts a pipeline, fused or not, and deletes its
// ALERTS stream once the forwarder's consumer is there: the windows cannot
// publish an alert until the returned config makes it again.
func startWithoutAlerts(ctx context.Context, t *testing.T, fused bool) (*running, jetstream.StreamConfig) {
	t.Helper()
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { siem.Close() })
	cfg := testConfig(t, t.TempDir(), siem.Addr().String())
	cfg.Windows.Fused = &fused
	p := start(t, cfg)
	js := p.bus.JetStream()
	waitFor(t, "the forwarder's consumer", func() bool {
		_, err := js.Consumer(ctx, bus.StreamAlerts, "outpost-forwarder-siem")
		return err == nil
	})
	st, err := js.Stream(ctx, bus.StreamAlerts)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, bus.StreamAlerts); err != nil {
		t.Fatal(err)
	}
	return p, st.CachedInfo().Config
}

func testWindowsRetryAfterFailedAlertPublish(t *testing.T, fused bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, alertsCfg := startWithoutAlerts(ctx, t, fused)
	js := p.bus.JetStream()
	attacker := "198.51.100.77"
	for i := range 5 {
		send(t, "tcp", p.tcp, octet(sshFail(t0.Add(time.Duration(i)*time.Second), attacker, i)))
		time.Sleep(50 * time.Millisecond) // several batches, some on top of the failing one
	}
	// Fused, the events failed are evaluated again, and counted again.
	waitFor(t, "the filter to evaluate the events", func() bool { return p.counter("outpost_filter_events_total") >= 5 })
	time.Sleep(time.Second) // the windows retry meanwhile
	if got := p.counter("outpost_alerts_raised_total"); got != 0 {
		t.Fatalf("%v alerts raised without ALERTS", got)
	}
	if _, err := js.CreateStream(ctx, alertsCfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the alert once ALERTS is back", func() bool { return p.counter("outpost_alerts_raised_total") == 1 })
	p.waitDrained(ctx, t)
	evaluated := p.counter("outpost_filter_events_total")
	send(t, "tcp", p.tcp, octet(sshFail(t0.Add(6*time.Second), attacker, 6)))
	waitFor(t, "the sixth event evaluated", func() bool { return p.counter("outpost_filter_events_total") > evaluated })
	p.waitDrained(ctx, t)
	st, err := js.Stream(ctx, bus.StreamAlerts)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("ALERTS holds %d alerts, want 1", n)
	}
	m, err := st.GetMsg(ctx, st.CachedInfo().State.FirstSeq)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(m.Data), `"count":5`) {
		t.Errorf("the alert does not count the 5 events: %s", m.Data)
	}
}

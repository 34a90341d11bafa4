package syslog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/event"
)

const waitFor = 5 * time.Second // bound of every wait in these tests

// memSink records what the source hands it.
type memSink struct {
	mu     sync.Mutex
	events []*event.Event
	dead   []deadLetter

	publishErr error         // returned by Publish when set
	gate       chan struct{} // when set, Publish waits for it to close
	entered    chan struct{} // when set, Publish signals each call here first
	flushes    int
	flushErr   error
}

type deadLetter struct {
	source, reason, sender string
	raw                    []byte
}

func (s *memSink) Publish(ctx context.Context, ev *event.Event) error {
	if s.entered != nil {
		select {
		case s.entered <- struct{}{}:
		default:
		}
	}
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.publishErr != nil {
		return s.publishErr
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := *ev // the source reuses ev, and its map
	cp.Attrs = maps.Clone(ev.Attrs)
	s.events = append(s.events, &cp)
	return nil
}

// Flush makes memSink a Flusher: what it holds it has stored already.
// flushes counts the calls; flushErr fails them.
func (s *memSink) Flush(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushes++
	return s.flushErr
}

func (s *memSink) DeadLetter(ctx context.Context, source, reason string, raw []byte, sender string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dead = append(s.dead, deadLetter{source, reason, sender, bytes.Clone(raw)})
	return nil
}

// wait polls until the sink holds at least n events and d dead letters.
func (s *memSink) wait(t *testing.T, n, d int) ([]*event.Event, []deadLetter) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		s.mu.Lock()
		evs, dls := append([]*event.Event(nil), s.events...), append([]deadLetter(nil), s.dead...)
		s.mu.Unlock()
		if len(evs) >= n && len(dls) >= d {
			return evs, dls
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %d events and %d dead letters, have %d and %d", waitFor, n, d, len(evs), len(dls))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func messages(evs []*event.Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Message)
	}
	return out
}

// testSource is a running Source on 127.0.0.1:0.
type testSource struct {
	*Source
	reg    *prometheus.Registry
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
	// runFails says Run is expected to return an error, so the cleanup
	// does not report it.
	runFails bool
}

func startSource(t *testing.T, cfg Config, sink Sink, tweaks ...func(*Source)) *testSource {
	t.Helper()
	reg := prometheus.NewRegistry()
	logs := &syncBuffer{}
	src, err := New(cfg, sink, slog.New(slog.NewTextHandler(logs, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tweak := range tweaks {
		tweak(src)
	}
	if err := src.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testSource{Source: src, reg: reg, logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- src.Run(ctx) }()
	t.Cleanup(func() {
		if err := ts.stop(t); err != nil && !ts.runFails {
			t.Errorf("Run: %v", err)
		}
	})
	return ts
}

// stop cancels Run and returns its result; it may be called again.
func (ts *testSource) stop(t *testing.T) error {
	t.Helper()
	ts.cancel()
	select {
	case err := <-ts.done:
		ts.done <- err // for a later call
		return err
	case <-time.After(waitFor):
		t.Fatalf("Run did not return within %s of cancel", waitFor)
		return nil
	}
}

func (ts *testSource) udpAddr() string { u, _ := ts.Addrs(); return u[0].String() }
func (ts *testSource) tcpAddr() string { _, c := ts.Addrs(); return c[0].String() }

func (ts *testSource) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	return counterValue(t, ts.reg, name, labels)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func dial(t *testing.T, network, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout(network, addr, waitFor)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(waitFor))
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatal(err)
	}
}

// expectClosed checks that the server closes c.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection not closed by the server: %v", err)
	}
}

func TestUDP(t *testing.T) {
	sink := &memSink{}
	ts := startSource(t, Config{UDP: []string{"127.0.0.1:0"}, MaxMessageSize: 480}, sink)
	c := dial(t, "udp", ts.udpAddr())

	datagrams := []string{
		"<34>Oct 11 22:14:15 mymachine su: 'su root' failed\n",
		"<165>1 2003-10-11T22:14:15.003Z host app - - - rfc5424\r\n\x00",
		"<13>1 garbage", // invalid RFC 5424
		"<13>Oct 11 22:14:15 h a: " + strings.Repeat("x", 600), // oversize
		"\n", // empty: skipped
		"<38>Oct 11 22:14:15 bastion sshd[1]: Failed password for root from 203.0.113.5 port 22 ssh2",
	}
	size := 0
	for _, d := range datagrams {
		write(t, c, d)
		size += len(d)
	}

	evs, dls := sink.wait(t, 3, 2)
	if got, want := messages(evs), []string{"'su root' failed", "rfc5424", "Failed password for root from 203.0.113.5 port 22 ssh2"}; !slices.Equal(got, want) {
		t.Errorf("messages %q, want %q", got, want)
	}
	local := c.LocalAddr().String()
	for _, ev := range evs {
		if ev.Sender != local || ev.Source != "syslog" {
			t.Errorf("Sender %q Source %q, want %q syslog", ev.Sender, ev.Source, local)
		}
	}
	if evs[2].Outcome != "failure" || evs[2].SrcIP != "203.0.113.5" {
		t.Errorf("sshd line not normalized: %+v", evs[2])
	}
	if !strings.HasPrefix(dls[0].reason, "rfc5424: ") || string(dls[0].raw) != "<13>1 garbage" {
		t.Errorf("dead letter %q %q", dls[0].reason, dls[0].raw)
	}
	if !strings.HasPrefix(dls[1].reason, "oversize: ") || len(dls[1].raw) != 480 || dls[1].sender != local || dls[1].source != "syslog" {
		t.Errorf("dead letter %q, %d bytes from %q", dls[1].reason, len(dls[1].raw), dls[1].sender)
	}

	for name, want := range map[string]float64{
		"outpost_component_received_events_total": 3,
		// the oversize datagram counts with the limit+1 bytes read of it
		"outpost_component_received_bytes_total": float64(size - 625 + 481),
	} {
		if got := ts.metric(t, name, map[string]string{"component": "syslog", "transport": "udp"}); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	for kind, want := range map[string]float64{"oversize": 1, "rfc5424": 1, "bad_length": 0} {
		if got := ts.metric(t, "outpost_component_errors_total", map[string]string{"error_type": kind}); got != want {
			t.Errorf("errors_total{%s} = %v, want %v", kind, got, want)
		}
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "component=syslog") || !strings.Contains(logs, "error_type=oversize") ||
		!strings.Contains(logs, `sample="<13>Oct 11`) {
		t.Errorf("log lacks the oversize sample:\n%s", logs)
	}
}

func TestTCPFramings(t *testing.T) {
	sink := &memSink{}
	ts := startSource(t, Config{TCP: []string{"127.0.0.1:0"}}, sink)

	// Both framings on one connection, split at awkward places.
	mixed := dial(t, "tcp", ts.tcpAddr())
	write(t, mixed, octet("<13>Oct 11 22:14:15 h a: 1"))
	write(t, mixed, "<13>Oct 11 22:14:15 h a: 2\r\n<13>Oct 11 22:")
	write(t, mixed, "14:15 h a: 3\n"+octet("<13>Oct 11 22:14:15 h a: 4"))
	evs, _ := sink.wait(t, 4, 0)
	if got, want := messages(evs), []string{"1", "2", "3", "4"}; !slices.Equal(got, want) {
		t.Errorf("mixed: messages %q, want %q", got, want)
	}

	// One framing per connection, on two connections at once.
	oc := dial(t, "tcp", ts.tcpAddr())
	lf := dial(t, "tcp", ts.tcpAddr())
	write(t, oc, octet("<13>Oct 11 22:14:15 h a: 5"))
	write(t, lf, "<13>Oct 11 22:14:15 h a: 6\n")
	write(t, oc, octet("<13>Oct 11 22:14:15 h a: 7"))
	write(t, lf, "<13>Oct 11 22:14:15 h a: 8") // no LF: delivered when the peer closes
	lf.Close()
	evs, _ = sink.wait(t, 8, 0)
	got := map[string]string{}
	for _, ev := range evs[4:] {
		got[ev.Message] = ev.Sender
	}
	for msg, c := range map[string]net.Conn{"5": oc, "6": lf, "7": oc, "8": lf} {
		if got[msg] != c.LocalAddr().String() {
			t.Errorf("message %s from %q, want %q", msg, got[msg], c.LocalAddr())
		}
	}
	if n := ts.metric(t, "outpost_component_received_events_total", map[string]string{"transport": "tcp"}); n != 8 {
		t.Errorf("received_events_total{tcp} = %v, want 8", n)
	}
}

func TestTCPBadFramesMidStream(t *testing.T) {
	sink := &memSink{}
	ts := startSource(t, Config{TCP: []string{"127.0.0.1:0"}, MaxMessageSize: 480}, sink)
	c := dial(t, "tcp", ts.tcpAddr())
	big := "<13>Oct 11 22:14:15 h a: " + strings.Repeat("x", 1000)
	write(t, c, "<13>Oct 11 22:14:15 h a: before\n")
	write(t, c, octet(big)) // octet-counted, oversize
	write(t, c, "<13>Oct 11 22:14:15 h a: between\n")
	write(t, c, big+"\n") // LF, oversize
	write(t, c, "12x not a length\n")
	write(t, c, octet("<13>Oct 11 22:14:15 h a: after"))

	evs, dls := sink.wait(t, 3, 3)
	if got, want := messages(evs), []string{"before", "between", "after"}; !slices.Equal(got, want) {
		t.Errorf("messages %q, want %q", got, want)
	}
	for i, want := range []string{"oversize: ", "oversize: ", "bad_length: "} {
		if !strings.HasPrefix(dls[i].reason, want) {
			t.Errorf("dead letter %d reason %q, want %q...", i, dls[i].reason, want)
		}
	}
	if !strings.HasPrefix(string(dls[0].raw), "<13>Oct 11") || len(dls[0].raw) != 480 {
		t.Errorf("oversize dead letter holds %d bytes %.20q", len(dls[0].raw), dls[0].raw)
	}
	if n := ts.metric(t, "outpost_component_errors_total", map[string]string{"error_type": "oversize"}); n != 2 {
		t.Errorf("errors_total{oversize} = %v, want 2", n)
	}
}

func TestMaxConnections(t *testing.T) {
	sink := &memSink{}
	ts := startSource(t, Config{TCP: []string{"127.0.0.1:0"}, MaxConnections: 1}, sink)

	first := dial(t, "tcp", ts.tcpAddr())
	write(t, first, "<13>Oct 11 22:14:15 h a: first\n")
	sink.wait(t, 1, 0) // first is being served

	second := dial(t, "tcp", ts.tcpAddr()) // the kernel accepts it, the source closes it
	expectClosed(t, second)
	if n := ts.metric(t, "outpost_syslog_rejected_connections_total", map[string]string{"reason": "max_connections"}); n != 1 {
		t.Errorf("rejected_connections_total = %v, want 1", n)
	}
	if n := ts.metric(t, "outpost_syslog_open_connections", nil); n != 1 {
		t.Errorf("open_connections = %v, want 1", n)
	}

	first.Close()
	waitUntil(t, func() bool { return ts.metric(t, "outpost_syslog_open_connections", nil) == 0 })
	third := dial(t, "tcp", ts.tcpAddr())
	write(t, third, "<13>Oct 11 22:14:15 h a: third\n")
	evs, _ := sink.wait(t, 2, 0)
	if evs[1].Message != "third" {
		t.Errorf("message %q, want third", evs[1].Message)
	}
}

func TestIdleTimeout(t *testing.T) {
	sink := &memSink{}
	ts := startSource(t, Config{TCP: []string{"127.0.0.1:0"}, IdleTimeout: 100 * time.Millisecond}, sink)
	c := dial(t, "tcp", ts.tcpAddr())
	write(t, c, "<13>Oct 11 22:14:15 h a: x\n")
	expectClosed(t, c)
	sink.wait(t, 1, 0)
	if n := ts.metric(t, "outpost_component_errors_total", map[string]string{"error_type": "read"}); n != 0 {
		t.Errorf("an idle close counted as a read error")
	}
}

func TestShutdown(t *testing.T) {
	before := runtime.NumGoroutine()
	sink := &memSink{}
	ts := startSource(t, Config{UDP: []string{"127.0.0.1:0"}, TCP: []string{"127.0.0.1:0", "127.0.0.1:0"}}, sink)
	addr := ts.tcpAddr()
	conns := []net.Conn{dial(t, "tcp", addr), dial(t, "tcp", addr), dial(t, "tcp", addr)}
	for _, c := range conns {
		write(t, c, "<13>Oct 11 22:14:15 h a: x\n")
	}
	sink.wait(t, 3, 0)
	write(t, conns[0], "<13>Oct 11 22:14:15 h a: partial frame, never finis")

	if err := ts.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	for _, c := range conns {
		expectClosed(t, c)
		c.Close()
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("dialing succeeded after Run returned: the listener is open")
	}
	if u, c := ts.Addrs(); len(u)+len(c) != 0 {
		t.Errorf("Addrs after Run = %v %v", u, c)
	}
	waitUntil(t, func() bool { return runtime.NumGoroutine() <= before })
	if n := ts.metric(t, "outpost_syslog_open_connections", nil); n != 0 {
		t.Errorf("open_connections = %v after shutdown", n)
	}
	if err := ts.Listen(); err == nil {
		t.Error("Listen after Run succeeded")
	}
}

// A frame read before the stop is still published, and so are the complete
// frames behind it in the connection's buffer.
func TestShutdownFinishesFramesInHand(t *testing.T) {
	sink := &memSink{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	ts := startSource(t, Config{TCP: []string{"127.0.0.1:0"}}, sink)
	c := dial(t, "tcp", ts.tcpAddr())
	write(t, c, "<13>Oct 11 22:14:15 h a: 1\n<13>Oct 11 22:14:15 h a: 2\n<13>Oct 11 22:14:15 h a: 3\n")
	select {
	case <-sink.entered:
	case <-time.After(waitFor):
		t.Fatal("Publish not called")
	}
	ts.cancel()
	select {
	case err := <-ts.done:
		t.Fatalf("Run returned %v while a publish was in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(sink.gate)
	if err := ts.stop(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	evs, _ := sink.wait(t, 3, 0)
	if got, want := messages(evs), []string{"1", "2", "3"}; !slices.Equal(got, want) {
		t.Errorf("messages %q, want %q", got, want)
	}
	expectClosed(t, c)
}

func TestSinkGone(t *testing.T) {
	gone := errors.New("bus closed")
	ts := startSource(t, Config{UDP: []string{"127.0.0.1:0"}}, &memSink{publishErr: gone})
	ts.runFails = true
	write(t, dial(t, "udp", ts.udpAddr()), "<13>Oct 11 22:14:15 h a: x")
	select {
	case err := <-ts.done:
		ts.done <- err
		if !errors.Is(err, gone) {
			t.Fatalf("Run = %v, want %v", err, gone)
		}
	case <-time.After(waitFor):
		t.Fatal("Run did not stop when the sink failed")
	}
	if n := ts.metric(t, "outpost_component_errors_total", map[string]string{"error_type": "publish"}); n != 1 {
		t.Errorf("errors_total{publish} = %v, want 1", n)
	}
	if strings.Contains(ts.logs.String(), "bus closed") {
		t.Error("the returned error was logged too")
	}
}

func TestListenFailureClosesEverything(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	src, err := New(Config{TCP: []string{"127.0.0.1:0", busy.Addr().String()}}, &memSink{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Listen(); err == nil {
		t.Fatal("Listen on a busy port succeeded")
	}
	if u, c := src.Addrs(); len(u)+len(c) != 0 {
		t.Errorf("sockets left open: %v %v", u, c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := src.Run(ctx); err == nil {
		t.Error("Run succeeded although Listen fails")
	}
}

func TestNew(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(Config{}, &memSink{}, nil, reg); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{}, &memSink{}, nil, reg); err == nil {
		t.Error("registering the metrics twice succeeded")
	}
	if _, err := New(Config{}, nil, nil, nil); err == nil {
		t.Error("New without a sink succeeded")
	}
	if _, err := New(Config{MaxMessageSize: 1}, &memSink{}, nil, nil); err == nil {
		t.Error("New with a bad config succeeded")
	}
}

// octet frames msg with an RFC 6587 octet count.
func octet(msg string) string { return fmt.Sprintf("%d %s", len(msg), msg) }

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", waitFor)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// One busy connection is parsed by several goroutines, chunk by chunk;
// its events still reach the sink complete and in order.
func TestTCPOneConnectionKeepsOrder(t *testing.T) {
	sink := &memSink{}
	ts := startSource(t, Config{TCP: []string{"127.0.0.1:0"}}, sink)
	c := dial(t, "tcp", ts.tcpAddr())
	const n = 20000
	var b strings.Builder
	for i := range n {
		b.WriteString(octet(fmt.Sprintf("<13>Oct 11 22:14:15 h a: %d", i)))
		if i%3000 == 0 { // writes of uneven size, frames split across them
			write(t, c, b.String())
			b.Reset()
		}
	}
	write(t, c, b.String())
	evs, _ := sink.wait(t, n, 0)
	for i, ev := range evs {
		if ev.Message != strconv.Itoa(i) {
			t.Fatalf("event %d is %q", i, ev.Message)
		}
	}
}

// A complete frame is delivered while the next one is still arriving: the
// reader never holds frames while it waits on the network.
func TestTCPFrameNotHeldBehindAPartialOne(t *testing.T) {
	sink := &memSink{}
	ts := startSource(t, Config{TCP: []string{"127.0.0.1:0"}}, sink)
	c := dial(t, "tcp", ts.tcpAddr())
	write(t, c, octet("<13>Oct 11 22:14:15 h a: first")+"40 <13>Oct 11")
	evs, _ := sink.wait(t, 1, 0)
	if evs[0].Message != "first" {
		t.Errorf("got %q", evs[0].Message)
	}
}

// With the default limit, a datagram too large for IPv4 (it can only come
// over IPv6) is oversize, not an event; the largest IPv4 datagram is one.
// Input taken whole as the message (RFC 3164 §4.3) is an event and counted
// as error_type="fallback".
func TestUDPDefaultLimitAndFallback(t *testing.T) {
	sink := &memSink{}
	ts := startSource(t, Config{UDP: []string{"[::1]:0"}}, sink)
	c := dial(t, "udp", ts.udpAddr())
	write(t, c, "<13>Oct 11 22:14:15 h a: "+strings.Repeat("x", 65507-25)) // largest IPv4 payload
	write(t, c, "<13>Oct 11 22:14:15 h a: "+strings.Repeat("y", 65508-25))
	write(t, c, "\x8b\x01 random bytes")
	evs, dls := sink.wait(t, 2, 1)
	if len(evs[0].Message) != 65507-25 || evs[1].Message != "\ufffd\x01 random bytes" {
		t.Errorf("events %.30q, %.30q", evs[0].Message, evs[1].Message)
	}
	if !strings.HasPrefix(dls[0].reason, "oversize: ") {
		t.Errorf("dead letter reason %q", dls[0].reason)
	}
	for kind, want := range map[string]float64{"oversize": 1, "fallback": 1} {
		if got := ts.metric(t, "outpost_component_errors_total", map[string]string{"error_type": kind}); got != want {
			t.Errorf("errors_total{%s} = %v, want %v", kind, got, want)
		}
	}
}

// rsyslog's omrelp pointed at the plain TCP port: its open command is
// refused, counted and logged with the fix, and gives no events.
func TestTCPRefusesRELP(t *testing.T) {
	sink := &memSink{}
	ts := startSource(t, Config{TCP: []string{"127.0.0.1:0"}}, sink)
	offers := "relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog"
	c := dial(t, "tcp", ts.tcpAddr())
	write(t, c, fmt.Sprintf("1 open %d %s\n", len(offers), offers))
	expectClosed(t, c)
	// A syslog sender after it is served as ever.
	ok := dial(t, "tcp", ts.tcpAddr())
	write(t, ok, "<13>Oct 11 22:14:15 h a: after\n")
	evs, _ := sink.wait(t, 1, 0)
	if got := messages(evs); !slices.Equal(got, []string{"after"}) {
		t.Errorf("events %q, want only the syslog one", got)
	}
	if n := ts.metric(t, "outpost_component_errors_total", map[string]string{"error_type": "relp"}); n != 1 {
		t.Errorf("errors_total{relp} = %v, want 1", n)
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "RELP") || !strings.Contains(logs, "omfwd") {
		t.Errorf("log does not name the fix:\n%s", logs)
	}
}

// What the kernel has accepted on an open connection when Run stops is
// read, framed and published before the connection is closed, even while
// the bus holds the source back.
func TestShutdownDrainsWhatTheKernelAccepted(t *testing.T) {
	sink := &memSink{gate: make(chan struct{})}
	ts := startSource(t, Config{TCP: []string{"127.0.0.1:0"}}, sink)
	c := dial(t, "tcp", ts.tcpAddr())
	// More than the source holds in memory while the bus is blocked, and
	// no more than the kernel's receive buffer takes on top of that.
	const n = 6000
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "<13>Oct 11 22:14:15 h a: %d\n", i)
	}
	in := b.String()
	write(t, c, in)
	// Usually the receiving kernel takes every byte; on a loaded machine its
	// receive window can close first. What counts is what it acknowledged:
	// wait until that stops growing, and every line inside it must come out.
	pending, still := unacked(t, c), time.Now()
	for deadline := time.Now().Add(waitFor); pending > 0 && time.Since(still) < 500*time.Millisecond; {
		if time.Now().After(deadline) {
			t.Fatalf("the receiving kernel kept taking bytes for %s", waitFor)
		}
		time.Sleep(10 * time.Millisecond)
		if u := unacked(t, c); u != pending {
			pending, still = u, time.Now()
		}
	}
	accepted := strings.Count(in[:len(in)-pending], "\n")
	if pending > 0 {
		t.Logf("the receiving kernel took %d of %d lines before the stop", accepted, n)
	}

	ts.cancel()
	time.Sleep(50 * time.Millisecond)
	close(sink.gate)
	if err := ts.stop(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	sink.mu.Lock()
	evs := sink.events
	sink.mu.Unlock()
	if len(evs) < accepted || len(evs) > n {
		t.Fatalf("%d lines published; the kernel had accepted %d of %d", len(evs), accepted, n)
	}
	for i, ev := range evs {
		if ev.Message != strconv.Itoa(i) {
			t.Fatalf("event %d is %q", i, ev.Message)
		}
	}
	if v := ts.metric(t, "outpost_syslog_shutdown_cut_lines_total", nil); v != 0 {
		t.Errorf("shutdown_cut_lines_total = %v, want 0", v)
	}
}

// A sender that does not pause, to a bus that does not drain: the stop
// timeout ends the drain, and the lines it cut off are counted.
func TestShutdownCutIsCounted(t *testing.T) {
	sink := &memSink{gate: make(chan struct{})} // never opens
	ts := startSource(t, Config{TCP: []string{"127.0.0.1:0"}}, sink,
		func(s *Source) { s.drainTimeout = 400 * time.Millisecond })
	c := dial(t, "tcp", ts.tcpAddr())
	line := []byte("<13>Oct 11 22:14:15 h a: x\n")
	batch := bytes.Repeat(line, 1000)
	done := make(chan struct{})
	go func() {
		defer close(done)
		deadline := time.Now().Add(3 * time.Second)
		c.SetWriteDeadline(deadline)
		for time.Now().Before(deadline) {
			if _, err := c.Write(batch); err != nil {
				return // closed by the source, or the deadline
			}
		}
	}()
	// The source took lines in and is behind (under a loaded CI machine the
	// sender's queue could fill before the source had read a line: then
	// nothing was cut).
	waitUntil(t, func() bool {
		return unacked(t, c) > 0 && ts.metric(t, "outpost_component_received_events_total", map[string]string{"transport": "tcp"}) > 0
	})
	start := time.Now()
	if err := ts.stop(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Run took %s to stop with a drain timeout of 400ms", d)
	}
	<-done
	if v := ts.metric(t, "outpost_syslog_shutdown_cut_lines_total", nil); v == 0 {
		t.Error("shutdown_cut_lines_total = 0, want the lines cut off")
	} else {
		t.Logf("%v lines cut", v)
	}
	if !strings.Contains(ts.logs.String(), "cut at shutdown") {
		t.Errorf("no log line for the cut:\n%s", ts.logs.String())
	}
}

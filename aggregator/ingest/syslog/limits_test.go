package syslog

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// A table full of idle connections still serves a new sender: the
// longest-idle connection makes room.
func TestFullTableServesANewSender(t *testing.T) {
	sink := &memSink{}
	ts := startSource(t, Config{TCP: []string{"127.0.0.1:0"}, MaxConnections: 4}, sink)
	var idle []net.Conn
	for range 6 { // more than the table holds
		idle = append(idle, dial(t, "tcp", ts.tcpAddr()))
	}
	waitUntil(t, func() bool { return ts.metric(t, "outpost_syslog_open_connections", nil) == 4 })
	time.Sleep(evictAfter + 100*time.Millisecond)

	c := dial(t, "tcp", ts.tcpAddr())
	var b strings.Builder
	for i := range 100 {
		fmt.Fprintf(&b, "<13>Oct 11 22:14:15 h a: %d\n", i)
	}
	write(t, c, b.String())
	c.Close()
	waitUntil(t, func() bool { sink.mu.Lock(); defer sink.mu.Unlock(); return len(sink.events) == 100 })
	if n := ts.metric(t, "outpost_syslog_open_connections", nil); n > 4 {
		t.Errorf("open_connections = %v, above max_connections", n)
	}
}

// A sender that trickles a frame in (slowloris) is closed when the frame
// deadline passes, though it never stays idle for idle_timeout.
func TestSlowFrameIsTimedOut(t *testing.T) {
	sink := &memSink{}
	ts := startSource(t, Config{TCP: []string{"127.0.0.1:0"}, IdleTimeout: 10 * time.Second}, sink,
		func(s *Source) { s.cfg.FrameTimeout = 300 * time.Millisecond })
	c := dial(t, "tcp", ts.tcpAddr())
	write(t, c, "<13>Oct 11 22:14:15 h a: fine\n")
	closed := make(chan time.Time, 1)
	start := time.Now()
	go func() {
		for range 40 { // 1 byte every 50 ms, for at most 2 s
			c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.Write([]byte("x")); err != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		closed <- time.Now()
	}()
	expectClosed(t, c)
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("closed after %s, frame_timeout is 300ms", d)
	}
	sink.wait(t, 1, 0)
	if n := ts.metric(t, "outpost_component_errors_total", map[string]string{"error_type": "frame_timeout"}); n != 1 {
		t.Errorf("errors_total{frame_timeout} = %v, want 1", n)
	}
	<-closed
}

func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: waitFor, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// One source address gets max_connections_per_source; another is served.
func TestMaxConnectionsPerSource(t *testing.T) {
	sink := &memSink{}
	ts := startSource(t, Config{TCP: []string{"127.0.0.1:0"}, MaxConnectionsPerSource: 2}, sink)
	a1 := dialFrom(t, "127.0.0.2", ts.tcpAddr())
	a2 := dialFrom(t, "127.0.0.2", ts.tcpAddr())
	write(t, a1, "<13>Oct 11 22:14:15 h a: a1\n")
	write(t, a2, "<13>Oct 11 22:14:15 h a: a2\n")
	sink.wait(t, 2, 0)
	expectClosed(t, dialFrom(t, "127.0.0.2", ts.tcpAddr()))
	b := dialFrom(t, "127.0.0.3", ts.tcpAddr())
	write(t, b, "<13>Oct 11 22:14:15 h a: b\n")
	sink.wait(t, 3, 0)
	if n := ts.metric(t, "outpost_syslog_rejected_connections_total", map[string]string{"reason": "max_connections_per_source"}); n != 1 {
		t.Errorf("rejected_connections_total{max_connections_per_source} = %v, want 1", n)
	}
}

// A listener with an allow list serves only the prefixes on it, over TCP
// and UDP, and counts what it refused; a listener without one serves all.
func TestAllowList(t *testing.T) {
	sink := &memSink{}
	ts := startSource(t, Config{
		UDP:   []string{"127.0.0.1:0"},
		TCP:   []string{"127.0.0.1:0", "[::1]:0"},
		Allow: map[string][]string{"127.0.0.1:0": {"127.0.0.2/32", "::1/128"}},
	}, sink)
	udpAddr := ts.udpAddr()
	_, tcp := ts.Addrs()

	expectClosed(t, dialFrom(t, "127.0.0.3", tcp[0].String()))
	write(t, dialFrom(t, "127.0.0.2", tcp[0].String()), "<13>Oct 11 22:14:15 h a: tcp allowed\n")
	write(t, dialFrom(t, "::1", tcp[1].String()), "<13>Oct 11 22:14:15 h a: no list\n")
	for _, from := range []string{"127.0.0.3", "127.0.0.2"} {
		u, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(from)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(udpAddr)))
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		write(t, u, "<13>Oct 11 22:14:15 h a: udp from "+from)
	}
	evs, _ := sink.wait(t, 3, 0)
	got := messages(evs)
	slices.Sort(got)
	if want := []string{"no list", "tcp allowed", "udp from 127.0.0.2"}; !slices.Equal(got, want) {
		t.Errorf("messages %q, want %q", got, want)
	}
	if n := ts.metric(t, "outpost_syslog_rejected_connections_total", map[string]string{"reason": "not_allowed"}); n != 1 {
		t.Errorf("rejected_connections_total{not_allowed} = %v, want 1", n)
	}
	waitUntil(t, func() bool {
		return ts.metric(t, "outpost_syslog_rejected_datagrams_total", map[string]string{"reason": "not_allowed"}) == 1
	})
}

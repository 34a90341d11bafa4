package syslog

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/config"
)

// Datagrams the kernel drops because the socket's buffer is full (the
// source is not reading: the bus holds it back) are counted.
func TestUDPKernelDropsCounted(t *testing.T) {
	sink := &memSink{gate: make(chan struct{})}
	ts := startSource(t, Config{UDP: []string{"127.0.0.1:0"}, UDPReadBuffer: 4096}, sink)
	c := dial(t, "udp", ts.udpAddr())
	msg := "<13>Oct 11 22:14:15 h a: " + strings.Repeat("x", 200)
	for range 500 { // far beyond 4 KiB while the source waits on the bus
		write(t, c, msg)
	}
	close(sink.gate)
	waitUntil(t, func() bool {
		write(t, c, msg) // the drop count rides on the next datagram read
		time.Sleep(10 * time.Millisecond)
		return ts.metric(t, "outpost_syslog_udp_kernel_drops_total", nil) > 0
	})
	drops := ts.metric(t, "outpost_syslog_udp_kernel_drops_total", nil)
	sink.mu.Lock()
	got := len(sink.events)
	sink.mu.Unlock()
	t.Logf("%v datagrams dropped by the kernel, %d events", drops, got)
	if drops+float64(got) > 500+1000 {
		t.Errorf("%v drops and %d events: more than were sent", drops, got)
	}
}

// A receive buffer the kernel caps below what was asked is logged once at
// start, naming the sysctl to raise.
func TestUDPReadBufferCapLogged(t *testing.T) {
	raw, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		t.Skip("no /proc/sys/net/core/rmem_max")
	}
	rmemMax, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	if rmemMax <= 0 || rmemMax >= 1<<29 {
		t.Skipf("net.core.rmem_max = %q", raw)
	}
	ts := startSource(t, Config{UDP: []string{"127.0.0.1:0", "127.0.0.1:0"}, UDPReadBuffer: config.ByteSize(2 * rmemMax)}, &memSink{})
	logs := ts.logs.String()
	if n := strings.Count(logs, "raise net.core.rmem_max"); n != 1 {
		t.Errorf("%d lines name net.core.rmem_max, want 1:\n%s", n, logs)
	}
}

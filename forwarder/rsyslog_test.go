package forwarder

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/ingest/syslog/rsyslogtest"
)

// rsyslog is a real rsyslogd with imrelp (rsyslogtest: its own config,
// pid file and work dir, no imuxsock), on a free port of 127.0.0.1. It
// writes every message it takes to out.log. The main queue is Direct, so
// imrelp acknowledges a message only after omfile wrote it: a kill -9 loses
// nothing it acknowledged.
type rsyslog struct {
	*rsyslogtest.Rsyslog
	port int
}

// needRsyslog skips when rsyslogd or imrelp is missing, except in CI
// (CI=true), where .ci/run installs them and their absence is a failure.
func needRsyslog(t *testing.T) string { return rsyslogtest.Need(t, "imrelp") }

func startRsyslog(t *testing.T, dir string, port int) *rsyslog {
	t.Helper()
	if port == 0 {
		port = rsyslogtest.FreePort(t)
	}
	conf := fmt.Sprintf(`global(workDirectory=%q maxMessageSize="64k")
main_queue(queue.type="Direct")
module(load="imrelp")
input(type="imrelp" address="127.0.0.1" port="%d")
template(name="raw" type="string" string="%%rawmsg%%\n")
action(type="omfile" file=%q template="raw")
`, dir, port, filepath.Join(dir, "out.log"))
	r := &rsyslog{port: port}
	r.Rsyslog = rsyslogtest.Start(t, dir, conf, r.addr(), "imrelp")
	return r
}

func (r *rsyslog) addr() string { return fmt.Sprintf("127.0.0.1:%d", r.port) }

// kill sends SIGKILL and reaps the process.
func (r *rsyslog) kill() { r.Kill() }

// lines returns what rsyslog wrote to out.log.
func (r *rsyslog) lines() []string { return r.Lines("out.log") }

func TestRELPToRsyslog(t *testing.T) {
	needRsyslog(t)
	h := newHarness(t)
	rs := startRsyslog(t, t.TempDir(), 0)
	h.start(testConfig(t, Destination{Address: rs.addr(), Transport: TransportRELP}))
	h.publish(testAlerts(500)...)
	waitFor(t, 30*time.Second, "500 alerts in rsyslog's file", func() bool { return len(rs.lines()) >= 500 })
	if d := checkAll(t, rs.lines(), 500); d != 0 {
		t.Errorf("%d duplicates without a fault", d)
	}
}

// TestRELPRsyslogKilled kills rsyslog with SIGKILL twice while alerts
// stream to it, restarting it each time: nothing is lost.
func TestRELPRsyslogKilled(t *testing.T) {
	needRsyslog(t)
	h := newHarness(t)
	dir := t.TempDir()
	rs := startRsyslog(t, dir, 0)
	h.start(testConfig(t, Destination{Address: rs.addr(), Transport: TransportRELP}))
	const n = 5000
	alerts := testAlerts(n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := 0; i < n && ctx.Err() == nil; i += 100 {
			h.publish(alerts[i : i+100]...)
		}
	}()
	for k := 1; k <= 2; k++ {
		target := k * n / 3
		waitFor(t, 60*time.Second, fmt.Sprintf("%d alerts before kill %d", target, k), func() bool { return len(rs.lines()) >= target })
		rs.kill()
		time.Sleep(300 * time.Millisecond) // down for a moment
		rs = startRsyslog(t, dir, rs.port)
	}
	<-published
	waitFor(t, 60*time.Second, "every alert after the kills", func() bool { return distinctIDs(rs.lines()) >= n })
	dups := checkAll(t, rs.lines(), n)
	t.Logf("2 × kill -9 of rsyslog: %d lines, %d distinct, %d duplicates", len(rs.lines()), n, dups)
}

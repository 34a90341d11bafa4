package forwarder

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// rsyslog is a real rsyslogd with imrelp, run by a test: its own config,
// pid file and work dir in t.TempDir(), no imuxsock (so it never touches
// /dev/log or a system rsyslog), a free port on 127.0.0.1. It writes every
// message it takes to out.log. The main queue is Direct, so imrelp
// acknowledges a message only after omfile wrote it: a kill -9 loses
// nothing it acknowledged.
type rsyslog struct {
	t    *testing.T
	dir  string
	port int
	cmd  *exec.Cmd
}

// needRsyslog skips when rsyslogd or imrelp is missing, except in CI
// (CI=true), where .ci/run installs them and their absence is a failure.
func needRsyslog(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("rsyslogd")
	if err == nil {
		bin, err = filepath.Abs(bin)
	}
	var mod []string
	if err == nil {
		mod, _ = filepath.Glob("/usr/lib/*/rsyslog/imrelp.so")
		more, _ := filepath.Glob("/usr/lib*/rsyslog/imrelp.so")
		mod = append(mod, more...)
	}
	if err == nil && len(mod) > 0 {
		return bin
	}
	msg := "rsyslogd with the imrelp module is needed (Debian: apt-get install rsyslog rsyslog-relp)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true, so this is a failure")
	}
	t.Skip(msg)
	return ""
}

func startRsyslog(t *testing.T, dir string, port int) *rsyslog {
	t.Helper()
	bin := needRsyslog(t)
	if port == 0 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	conf := fmt.Sprintf(`global(workDirectory=%q maxMessageSize="64k")
main_queue(queue.type="Direct")
module(load="imrelp")
input(type="imrelp" address="127.0.0.1" port="%d")
template(name="raw" type="string" string="%%rawmsg%%\n")
action(type="omfile" file=%q template="raw")
`, dir, port, filepath.Join(dir, "out.log"))
	cf := filepath.Join(dir, "rsyslog.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-n", "-f", cf, "-i", filepath.Join(dir, "rsyslogd.pid"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if !testing.Verbose() {
		cmd.Stdout, cmd.Stderr = nil, nil
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &rsyslog{t: t, dir: dir, port: port, cmd: cmd}
	t.Cleanup(r.kill)
	// Ready when the port accepts.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", r.addr(), 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rsyslogd did not listen on %s within 10s", r.addr())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r
}

func (r *rsyslog) addr() string { return fmt.Sprintf("127.0.0.1:%d", r.port) }

// kill sends SIGKILL and reaps the process.
func (r *rsyslog) kill() {
	if r.cmd.ProcessState != nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	_ = r.cmd.Wait()
}

// lines returns what rsyslog wrote to out.log.
func (r *rsyslog) lines() []string {
	f, err := os.Open(filepath.Join(r.dir, "out.log"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 128<<10), 128<<10)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

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

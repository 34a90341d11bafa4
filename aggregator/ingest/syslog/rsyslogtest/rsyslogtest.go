// Package rsyslogtest runs a real rsyslogd for tests: its own config, pid
// file and work directory, no imuxsock (so it never touches /dev/log or a
// system rsyslog), listening and sending on 127.0.0.1 only.
package rsyslogtest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Packages names the Debian packages that hold each module a test may
// need, for the message when one is missing.
var Packages = map[string]string{
	"imrelp":     "rsyslog-relp",
	"omrelp":     "rsyslog-relp",
	"lmnsd_gtls": "rsyslog-gnutls",
	"lmnsd_ossl": "rsyslog-openssl",
}

// Need returns rsyslogd's path if it and the named modules are installed.
// Otherwise it skips the test, except in CI (CI=true), where .ci/run
// installs them and their absence is a failure.
func Need(t testing.TB, modules ...string) string {
	t.Helper()
	bin, err := exec.LookPath("rsyslogd")
	if err == nil {
		bin, err = filepath.Abs(bin)
	}
	pkgs := []string{"rsyslog"}
	missing := err != nil
	for _, m := range modules {
		found, _ := filepath.Glob("/usr/lib/*/rsyslog/" + m + ".so")
		more, _ := filepath.Glob("/usr/lib*/rsyslog/" + m + ".so")
		if len(found)+len(more) == 0 {
			missing = true
		}
		if p := Packages[m]; p != "" {
			pkgs = append(pkgs, p)
		}
	}
	if !missing {
		return bin
	}
	msg := fmt.Sprintf("rsyslogd with %v is needed (Debian: apt-get install %s)", modules, strings.Join(pkgs, " "))
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true, so this is a failure")
	}
	t.Skip(msg)
	return ""
}

// FreePort returns a TCP port free on 127.0.0.1 a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Rsyslog is a running rsyslogd.
type Rsyslog struct {
	Dir string // its work directory; the config is rsyslog.conf there
	cmd *exec.Cmd
}

// Start writes conf (rsyslog's RainerScript; the caller sets
// global(workDirectory=…) to dir, which must exist) and runs rsyslogd on
// it until the test ends. If waitAddr is set, it returns once that TCP
// address accepts connections (rsyslog's own input).
func Start(t testing.TB, dir, conf, waitAddr string, modules ...string) *Rsyslog {
	t.Helper()
	bin := Need(t, modules...)
	cf := filepath.Join(dir, "rsyslog.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-N1", "-f", cf).CombinedOutput(); err != nil {
		t.Fatalf("rsyslogd -N1 refuses the config: %v\n%s\n%s", err, out, conf)
	}
	cmd := exec.Command(bin, "-n", "-f", cf, "-i", filepath.Join(dir, "rsyslogd.pid"))
	if testing.Verbose() {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &Rsyslog{Dir: dir, cmd: cmd}
	t.Cleanup(r.Kill)
	if waitAddr == "" {
		return r
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", waitAddr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("rsyslogd did not listen on %s within 10s", waitAddr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill sends SIGKILL and reaps the process; it may be called again.
func (r *Rsyslog) Kill() {
	if r.cmd.ProcessState != nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	_ = r.cmd.Wait()
}

// Stop sends SIGTERM and waits up to 10 s for rsyslogd to exit (it
// persists its queues), then kills it.
func (r *Rsyslog) Stop() {
	if r.cmd.ProcessState != nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
}

// Lines returns the lines of a file in its work directory.
func (r *Rsyslog) Lines(name string) []string {
	f, err := os.Open(filepath.Join(r.Dir, name))
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

// Send writes lines, each followed by LF, to a plain TCP input.
func Send(t testing.TB, addr string, lines []string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	w := bufio.NewWriter(c)
	for _, l := range lines {
		w.WriteString(l)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
}

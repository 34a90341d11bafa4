package pipeline

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/ingest/syslog/rsyslogtest"
	"github.com/outpost-siem/outpost/forwarder/receiver"
)

// TestRELPSurvivesKill9: a real rsyslog sends numbered lines with omrelp
// (a disk-assisted action queue, as a production sender has) to the real
// outpost binary, which is killed with SIGKILL mid-stream and started
// again on the same data dir. Every line reaches the SIEM: what Outpost
// had acknowledged was in JetStream, and what it had not, rsyslog sent
// again.
func TestRELPSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the outpost binary")
	}
	rsyslogtest.Need(t, "omrelp")
	const lines = 30000
	dir := t.TempDir()
	bin := filepath.Join(dir, "outpost")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/outpost-siem/outpost/cmd/outpost").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer siem.Close()
	rulesDir := filepath.Join(dir, "rules")
	os.Mkdir(rulesDir, 0o755)
	if err := os.WriteFile(filepath.Join(rulesDir, "relp.yaml"), []byte(`rules:
  - id: relp-line
    title: A numbered line
    kind: match
    severity: low
    condition: message startsWith "relp-kill line "
    group_by: [message]
    fields: [message]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	relpPort, httpPort := rsyslogtest.FreePort(t), rsyslogtest.FreePort(t)
	cfg := fmt.Sprintf(`data_dir: %s
http: {listen: "127.0.0.1:%d"}
log: {level: info}
rules: {dir: %s}
ingest: {syslog: {relp: [{listen: "127.0.0.1:%d"}]}}
forwarder:
  destinations:
    - {name: siem, address: %q, framing: octet-counting, backoff_max: 200ms}
`, filepath.Join(dir, "data"), httpPort, rulesDir, relpPort, siem.Addr())
	cf := filepath.Join(dir, "outpost.yaml")
	if err := os.WriteFile(cf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "outpost.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	t.Cleanup(func() {
		if t.Failed() {
			data, _ := os.ReadFile(logFile.Name())
			t.Logf("outpost's log:\n%s", data[max(0, len(data)-8000):])
		}
	})
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "run", "-c", cf)
		cmd.Stderr = logFile
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	relpEvents := func() float64 {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", httpPort))
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, `outpost_component_received_events_total{component="syslog",transport="relp"}`) {
				v, _ := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
				return v
			}
		}
		return -1
	}
	outpost := start()

	// The sender: lines written to its plain TCP input go out by omrelp.
	sdir := t.TempDir()
	in := fmt.Sprintf("127.0.0.1:%d", rsyslogtest.FreePort(t))
	rs := rsyslogtest.Start(t, sdir, fmt.Sprintf(`global(workDirectory=%q maxMessageSize="64k")
module(load="imtcp")
module(load="omrelp")
input(type="imtcp" address="127.0.0.1" port=%q)
action(type="omrelp" target="127.0.0.1" port="%d"
  queue.type="LinkedList" queue.filename="relpq" queue.size="100000" queue.saveOnShutdown="on"
  action.resumeRetryCount="-1" action.resumeInterval="1")
`, sdir, in[strings.LastIndexByte(in, ':')+1:], relpPort), in, "omrelp")
	defer rs.Stop()
	now := time.Now().UTC()
	msgs := make([]string, lines)
	for i := range msgs {
		msgs[i] = fmt.Sprintf("<13>%s sender-1 app: relp-kill line %d", now.Format(time.Stamp), i)
	}
	go rsyslogtest.Send(t, in, msgs)

	// Kill once some lines are in, well before all are.
	deadline := time.Now().Add(60 * time.Second)
	var atKill float64
	for {
		if atKill = relpEvents(); atKill >= 2000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outpost took %v RELP events in 60s", atKill)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := outpost.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = outpost.Wait()
	if atKill >= lines {
		t.Fatalf("the kill came after every line was in (%v): nothing was tested", atKill)
	}
	t.Logf("killed with %v of %d lines taken", atKill, lines)
	start()

	// Every line reaches the SIEM, some perhaps twice.
	lineRE := regexp.MustCompile(`relp-kill line (\d+)`)
	seen := make(map[int]bool, lines)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for len(seen) < lines {
		for _, m := range siem.Messages() {
			if sm := lineRE.FindStringSubmatch(m); sm != nil {
				n, _ := strconv.Atoi(sm[1])
				seen[n] = true
			}
		}
		if ctx.Err() != nil {
			var missing []int
			for i := 0; i < lines && len(missing) < 10; i++ {
				if !seen[i] {
					missing = append(missing, i)
				}
			}
			t.Fatalf("%d of %d lines reached the SIEM; first missing: %v", len(seen), lines, missing)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

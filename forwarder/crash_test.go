package forwarder

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/event"
)

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestOutpostSIGKILL runs the real binary as a child process, kills it
// with SIGKILL while alerts are in flight, restarts it on the same data
// dir, and checks that every alert reached the receiver, duplicates with
// the same externalId.
func TestOutpostSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the outpost binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "outpost")
	build := exec.Command("go", "build", "-o", bin, "github.com/outpost-siem/outpost/cmd/outpost")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	r := listenStream(t, "127.0.0.1:0", nil)
	cfg := fmt.Sprintf(`data_dir: %s
http: {listen: "off"}
log: {level: warn}
ingest: {syslog: {tcp: ["127.0.0.1:%d"], udp: []}}
forwarder:
  hostname: outpost-crash
  destinations:
    - {name: siem, address: %q, framing: octet-counting, backoff_max: 200ms}
`, filepath.Join(dir, "data"), freePort(t), r.addr())
	cf := filepath.Join(dir, "outpost.yaml")
	if err := os.WriteFile(cf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func() *exec.Cmd {
		cmd := exec.Command(bin, "run", "-c", cf)
		if testing.Verbose() {
			cmd.Stderr = os.Stderr
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
		})
		return cmd
	}

	// Only Outpost may publish alerts, so they are put into its data dir
	// before it starts, by the same bus it opens.
	const n = 4000
	alerts := testAlerts(n)
	seedAlerts(t, filepath.Join(dir, "data"), alerts)
	child := run()
	waitFor(t, 30*time.Second, "some alerts delivered", func() bool { return r.count() >= n/4 })
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	atKill := r.count()
	if atKill >= n {
		t.Logf("all %d alerts were out before the kill; the restart is still checked", n)
	}
	run()
	waitFor(t, 60*time.Second, "every alert after the restart", func() bool { return distinctIDs(r.messages()) >= n })
	time.Sleep(300 * time.Millisecond)
	dups := checkAll(t, r.messages(), n)
	t.Logf("SIGKILL after %d of %d alerts: %d duplicates after the restart", atKill, n, dups)
}

// seedAlerts opens the embedded bus on dataDir, publishes alerts to ALERTS
// and closes it again.
func seedAlerts(t *testing.T, dataDir string, alerts []event.Alert) {
	t.Helper()
	var bc bus.Config
	if err := bc.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := bus.Open(ctx, bc, dataDir, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	js := b.JetStream()
	for _, a := range alerts {
		data, _ := json.Marshal(a)
		m := nats.NewMsg("alerts.high")
		m.Header.Set(jetstream.MsgIDHeader, a.ID)
		m.Data = data
		if _, err := js.PublishMsgAsync(m); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("publishing alerts timed out")
	}
}

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
	natsPort := freePort(t)
	cfg := fmt.Sprintf(`data_dir: %s
http: {listen: "off"}
log: {level: warn}
nats: {listen: "127.0.0.1:%d"}
ingest: {syslog: {tcp: ["127.0.0.1:%d"], udp: []}}
forwarder:
  hostname: outpost-crash
  destinations:
    - {name: siem, address: %q, framing: octet-counting, backoff_max: 200ms}
`, filepath.Join(dir, "data"), natsPort, freePort(t), r.addr())
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
	connect := func() (*nats.Conn, jetstream.JetStream) {
		var nc *nats.Conn
		var err error
		waitFor(t, 30*time.Second, "outpost's NATS", func() bool {
			nc, err = nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", natsPort))
			return err == nil
		})
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return nc, js
	}

	child := run()
	nc, js := connect()
	const n = 4000
	alerts := testAlerts(n)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	waitFor(t, 30*time.Second, "the ALERTS stream", func() bool { _, err := js.Stream(ctx, "ALERTS"); return err == nil })
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
	nc.Close()
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

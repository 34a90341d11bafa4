package pipeline

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/forwarder/receiver"
)

const thresholdRule = `
rules:
  - id: three-failures
    title: Three SSH failures
    kind: threshold
    severity: 6
    condition: action == "logon" && outcome == "failure"
    group_by: [src_ip]
    threshold: 3
    window: 5m
`

func writeRules(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A reload in the middle of a window keeps the window of an unchanged rule;
// a rule set with a problem is rejected and the running one stays; a change
// to a file in the rules dir is picked up without a signal.
func TestReloadKeepsWindowState(t *testing.T) {
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer siem.Close()
	rulesDir := t.TempDir()
	writeRules(t, rulesDir, "a.yaml", thresholdRule)
	cfg := testConfig(t, t.TempDir(), siem.Addr().String())
	cfg.Rules.Dir = rulesDir
	p := start(t, cfg)
	attacker := "198.51.100.44"

	send(t, "tcp", p.tcp, octet(sshFail(t0, attacker, 1)), octet(sshFail(t0.Add(time.Second), attacker, 2)))
	p.waitSettled(t, 2)

	// A broken file: rejected, the running set stays.
	writeRules(t, rulesDir, "b.yaml", "rules:\n  - {id: broken, title: T, kind: match, severity: 1, condition: 'outcom == 1'}\n")
	if err := p.ReloadRules(); err == nil || !strings.Contains(err.Error(), "unknown name outcom") {
		t.Fatalf("broken set: err = %v", err)
	}
	if p.Rules().Rule("three-failures") == nil {
		t.Fatal("the running set was replaced by a broken one")
	}
	// Fixed, with one more rule: accepted; three-failures is unchanged.
	writeRules(t, rulesDir, "b.yaml", "rules:\n  - {id: other, title: T, kind: match, severity: 1, condition: 'app == \"nothing\"'}\n")
	if err := p.ReloadRules(); err != nil {
		t.Fatal(err)
	}
	if p.Rules().Rule("other") == nil {
		t.Fatal("the new rule is not running")
	}

	send(t, "tcp", p.tcp, octet(sshFail(t0.Add(2*time.Second), attacker, 3)))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := siem.Wait(ctx, 1)
	if err != nil {
		t.Fatalf("the window was lost in the reload: %v", err)
	}
	if !strings.Contains(got[0], "|three-failures|") || !strings.Contains(got[0], "cnt=3 ") {
		t.Errorf("alert: %s", got[0])
	}

	// The watcher reloads on its own when a file changes.
	before := p.counter("outpost_rules_reloads_total")
	writeRules(t, rulesDir, "c.yaml", "rules:\n  - {id: third, title: T, kind: match, severity: 1, condition: 'app == \"x\"'}\n")
	waitFor(t, "the watcher to reload", func() bool { return p.Rules().Rule("third") != nil })
	if p.counter("outpost_rules_reloads_total") <= before {
		t.Error("reload not counted")
	}
}

// An event older than its source's newest by more than the allowed
// lateness is counted and dead-lettered, not evaluated.
func TestLateEventsAreDeadLettered(t *testing.T) {
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer siem.Close()
	p := start(t, testConfig(t, t.TempDir(), siem.Addr().String()))
	send(t, "tcp", p.tcp,
		octet(sshFail(t0.Add(10*time.Minute), "192.0.2.1", 1)),
		octet(sshFail(t0.Add(9*time.Minute), "192.0.2.1", 2)), // 1 min late: inside the 2 min allowed
		octet(sshFail(t0, "192.0.2.1", 3)))                    // 10 min late: beyond
	waitFor(t, "the late event counted", func() bool { return p.counter("outpost_filter_late_events_total") == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := p.bus.JetStream().Stream(ctx, bus.StreamDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	// The counter moves before the dead letter's publish is acked.
	var msg *jetstream.RawStreamMsg
	waitFor(t, "the dead letter for the late event", func() bool {
		msg, err = st.GetLastMsgForSubject(ctx, "deadletter.late")
		return err == nil
	})
	if r := msg.Header.Get("Outpost-Reason"); !strings.HasPrefix(r, "late: event time 2026-11-23T10:00:00Z") {
		t.Errorf("reason %q", r)
	}
	if !strings.Contains(string(msg.Data), "port 3 ssh2") {
		t.Errorf("dead letter does not hold the event: %s", msg.Data)
	}
}

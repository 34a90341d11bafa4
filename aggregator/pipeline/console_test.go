package pipeline

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/forwarder/receiver"
)

// TestConsoleSnapshot: what /api/console says of a running pipeline — the
// alert raised, counted under its rule and listed; the sender's host; a
// dead letter with its sample; the five streams; and a rejected reload's
// result and errors, then an accepted one's.
func TestConsoleSnapshot(t *testing.T) {
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer siem.Close()
	rulesDir := t.TempDir()
	writeRules(t, rulesDir, "a.yaml", thresholdRule)
	cfg := testConfig(t, t.TempDir(), siem.Addr().String())
	cfg.Rules.Dir = rulesDir
	cfg.HTTP = HTTPConfig{Listen: "127.0.0.1:0", SampleEvery: 100 * time.Millisecond}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	p := start(t, cfg)
	attacker := "198.51.100.45"
	send(t, "tcp", p.tcp, octet(sshFail(t0, attacker, 1)), octet(sshFail(t0.Add(time.Second), attacker, 2)),
		octet(sshFail(t0.Add(2*time.Second), attacker, 3)), "99999999 <13>oversize\n")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := siem.Wait(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// Counted once the windows' checkpoint has the alert's ack.
	waitFor(t, "the alert to be counted", func() bool { return p.counter("outpost_alerts_raised_total") == 1 })
	time.Sleep(1100 * time.Millisecond) // past the snapshot cache, a few samples
	s := p.ConsoleSnapshot(ctx)
	if len(s.Alerts) != 1 || s.Alerts[0].Rule != "three-failures" || s.Alerts[0].Count != 3 {
		t.Errorf("alerts: %+v", s.Alerts)
	}
	var row *struct{ matches, alerts float64 }
	for _, r := range s.Rules.PerRule {
		if r.ID == "three-failures" {
			row = &struct{ matches, alerts float64 }{r.Matches, float64(r.Alerts)}
		}
	}
	if row == nil || row.matches != 3 || row.alerts != 1 {
		t.Errorf("per rule: %+v", s.Rules.PerRule)
	}
	if len(s.Sources) != 1 || s.Sources[0].Host != "web-01" || s.Sources[0].Events != 3 || s.Sources[0].Stale {
		t.Errorf("sources: %+v", s.Sources)
	}
	if len(s.DeadLetters.Latest) != 1 || s.DeadLetters.Latest[0].Stage != "syslog" || !strings.HasPrefix(s.DeadLetters.Latest[0].Reason, "oversize") {
		t.Errorf("dead letters: %+v", s.DeadLetters)
	}
	if len(s.Pipeline.Streams) != 5 || s.Top.AlertsOut != 1 || !s.Top.Ready || s.Top.DeadLetters != 1 {
		t.Errorf("streams %d, top %+v", len(s.Pipeline.Streams), s.Top)
	}
	if len(s.Series.Times) == 0 || len(s.Series.EventsIn["syslog/tcp"]) != len(s.Series.Times) {
		t.Errorf("series: %d times, syslog/tcp %d", len(s.Series.Times), len(s.Series.EventsIn["syslog/tcp"]))
	}

	writeRules(t, rulesDir, "b.yaml", "rules:\n  - {id: broken, title: T, kind: match, severity: 1, condition: 'outcom == 1'}\n")
	_ = p.ReloadRules()
	time.Sleep(1100 * time.Millisecond)
	s = p.ConsoleSnapshot(ctx)
	if s.Rules.LastReload == nil || s.Rules.LastResult != "rejected" || len(s.Rules.LastErrors) == 0 ||
		!strings.Contains(strings.Join(s.Rules.LastErrors, "\n"), "unknown name outcom") || s.Rules.Loaded != 1 {
		t.Errorf("after a rejected reload: %+v", s.Rules)
	}
	writeRules(t, rulesDir, "b.yaml", "rules:\n  - {id: other, title: T, kind: match, severity: 1, condition: 'app == \"nothing\"'}\n")
	if err := p.ReloadRules(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if s = p.ConsoleSnapshot(ctx); s.Rules.LastResult != "ok" || len(s.Rules.LastErrors) != 0 || s.Rules.Loaded != 2 {
		t.Errorf("after an accepted reload: %+v", s.Rules)
	}
}

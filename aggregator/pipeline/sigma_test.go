package pipeline

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/forwarder/receiver"
)

// A Sigma repository in rules.sigma: a linux/sshd count aggregation fires
// on syslog over TCP and reaches the SIEM as CEF; a keyword rule fires
// too; a rule Outpost cannot run is left out, counted, and the rest runs.
func TestSigmaRulesEndToEnd(t *testing.T) {
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer siem.Close()
	sigmaDir := t.TempDir()
	writeRules(t, sigmaDir, "sshd_spray.yml", `title: One address tries many accounts over SSH
id: 9b1e2c3d-0000-4000-8000-000000000001
status: stable
level: high
tags: [attack.credential-access, attack.t1110.003]
logsource: {product: linux, service: sshd}
detection:
  selection:
    message|contains: 'Failed password for'
  timeframe: 10m
  condition: selection | count(user) by src_ip > 2
fields: [host]
`)
	writeRules(t, sigmaDir, "sshd_protocol.yml", `title: SSH bad protocol version
id: 9b1e2c3d-0000-4000-8000-000000000002
status: stable
level: low
logsource: {product: linux, service: sshd}
detection:
  keywords: ['bad protocol version identification']
  condition: keywords
`)
	writeRules(t, sigmaDir, "windows.yml", `title: Not for Outpost yet
id: 9b1e2c3d-0000-4000-8000-000000000003
status: stable
level: high
logsource: {product: windows, service: powershell}
detection:
  selection: {ScriptBlockText|contains: Invoke-Mimikatz}
  condition: selection
`)
	cfg := testConfig(t, t.TempDir(), siem.Addr().String())
	cfg.Rules.Dir = t.TempDir()
	writeRules(t, cfg.Rules.Dir, "none.yaml", "rules: []\n")
	cfg.Rules.Sigma = []string{sigmaDir}
	p := start(t, cfg)
	if got := p.counter("outpost_rules_sigma_rejected"); got != 1 {
		t.Errorf("outpost_rules_sigma_rejected = %v, want 1", got)
	}
	attacker := "198.51.100.60"
	var frames []string
	for i, user := range []string{"root", "admin", "admin", "oracle"} {
		frames = append(frames, octet(fmt.Sprintf("<38>1 %s web-07 sshd 4242 - - Failed password for %s from %s port %d ssh2",
			t0.Add(time.Duration(i)*20*time.Second).Format(time.RFC3339), user, attacker, 40000+i)))
	}
	frames = append(frames, octet(fmt.Sprintf("<38>1 %s web-07 sshd 4242 - - Bad protocol version identification 'GET / HTTP/1.1' from %s port 5000",
		t0.Add(2*time.Minute).Format(time.RFC3339), attacker)))
	send(t, "tcp", p.tcp, frames...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msgs, err := siem.Wait(ctx, 2)
	if err != nil {
		t.Fatalf("CEF: %v (got %q)", err, siem.Messages())
	}
	all := strings.Join(msgs, "\n")
	for _, want := range []string{
		"|9b1e2c3d-0000-4000-8000-000000000001|One address tries many accounts over SSH|8|",
		"src=" + attacker,
		"T1110.003",
		"|9b1e2c3d-0000-4000-8000-000000000002|SSH bad protocol version|3|",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("CEF lacks %q:\n%s", want, all)
		}
	}
	p.waitSettled(t, 5)
	time.Sleep(300 * time.Millisecond)
	if n := len(siem.Messages()); n != 2 {
		t.Errorf("%d CEF messages, want 2 (one per rule):\n%s", n, strings.Join(siem.Messages(), "\n"))
	}
}

// A Sigma rule with a problem in rules.dir rejects the reload, with its
// file and line, and the running rules stay; a file in rules.sigma that
// changes is picked up.
func TestSigmaReload(t *testing.T) {
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer siem.Close()
	cfg := testConfig(t, t.TempDir(), siem.Addr().String())
	cfg.Rules.Dir = t.TempDir()
	good := "title: Root logon\nid: 9b1e2c3d-0000-4000-8000-000000000010\nstatus: stable\nlogsource: {product: linux, service: sshd}\ndetection:\n  sel: {user: root}\n  condition: sel\n"
	writeRules(t, cfg.Rules.Dir, "root.yml", good)
	cfg.Rules.Sigma = []string{t.TempDir()}
	p := start(t, cfg)
	if p.Rules().Rule("9b1e2c3d-0000-4000-8000-000000000010") == nil {
		t.Fatal("the Sigma rule in rules.dir is not running")
	}
	writeRules(t, cfg.Rules.Dir, "bad.yml", "title: Bad\nid: 9b1e2c3d-0000-4000-8000-000000000011\nlogsource: {product: linux, service: sshd}\ndetection:\n  sel: {user|often: root}\n  condition: sel\n")
	err = p.ReloadRules()
	if want := `bad.yml:5: rule "9b1e2c3d-0000-4000-8000-000000000011": detection.sel.user: unknown modifier "often"`; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("reload: %v, want %q", err, want)
	}
	if p.Rules().Rule("9b1e2c3d-0000-4000-8000-000000000010") == nil {
		t.Fatal("a rejected reload changed the running rules")
	}
	// A new rule in the Sigma dir is picked up by the watcher.
	writeRules(t, cfg.Rules.Dir, "bad.yml", "rules: []\n")
	writeRules(t, cfg.Rules.Sigma[0], "new.yml", strings.Replace(good, "000000000010", "000000000012", 1))
	waitFor(t, "the new Sigma rule to be loaded", func() bool { return p.Rules().Rule("9b1e2c3d-0000-4000-8000-000000000012") != nil })
}

// A Sigma correlation with lt ("fewer than") is judged when its window
// closes: through the real windows stage, its state and deadline kept in
// Badger across a restart, it fires once the watermark passes the window,
// for the address below the bound only.
func TestSigmaFewerThanFiresAtWindowClose(t *testing.T) {
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer siem.Close()
	sigmaDir := t.TempDir()
	writeRules(t, sigmaDir, "lone.yml", `title: SSH failure
id: 9b1e2c3d-0000-4000-8000-000000000020
name: ssh_failure
status: stable
logsource: {product: linux, service: sshd}
detection:
  selection:
    message|contains: 'Failed password for'
  condition: selection
---
title: A probe, not a brute force (fewer than three failures in ten minutes)
id: 9b1e2c3d-0000-4000-8000-000000000021
status: stable
level: low
correlation:
  type: event_count
  rules: [ssh_failure]
  group-by: [src_ip]
  timespan: 10m
  condition: {lt: 3}
`)
	dir := t.TempDir()
	cfg := testConfig(t, dir, siem.Addr().String())
	cfg.Rules.Dir = t.TempDir()
	writeRules(t, cfg.Rules.Dir, "none.yaml", "rules: []\n")
	cfg.Rules.Sigma = []string{sigmaDir}
	p1 := start(t, cfg)
	probe, brute := "198.51.100.70", "198.51.100.71"
	send(t, "tcp", p1.tcp, octet(sshFail(t0, probe, 1)), octet(sshFail(t0.Add(time.Minute), probe, 2)),
		octet(sshFail(t0, brute, 3)), octet(sshFail(t0.Add(time.Second), brute, 4)), octet(sshFail(t0.Add(2*time.Second), brute, 5)))
	p1.waitSettled(t, 5)
	time.Sleep(300 * time.Millisecond)
	if got := siem.Messages(); len(got) != 0 {
		t.Fatalf("alerts before the window closed: %q", got)
	}
	p1.stop()

	p2 := start(t, cfg)
	// An event half an hour later moves the watermark past both windows.
	send(t, "tcp", p2.tcp, octet(sshFail(t0.Add(30*time.Minute), "198.51.100.72", 6)))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msgs, err := siem.Wait(ctx, 1)
	if err != nil {
		t.Fatalf("no alert once the window closed: %v", err)
	}
	p2.waitSettled(t, 1)
	time.Sleep(300 * time.Millisecond)
	msgs = siem.Messages()
	if len(msgs) != 1 || !strings.Contains(msgs[0], "src="+probe) || !strings.Contains(msgs[0], "cnt=2 ") ||
		!strings.Contains(msgs[0], "|9b1e2c3d-0000-4000-8000-000000000021|") {
		t.Fatalf("want one alert for %s with cnt=2, got %q", probe, msgs)
	}
}

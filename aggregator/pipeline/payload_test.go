package pipeline

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/forwarder/receiver"
)

// A firewall sending CEF over TCP: ten denials of one source to one port,
// then an allow, raise the pack's firewall-denied-then-allowed rule with
// the appliance's rule name; the SIEM gets it as CEF, and the messages are
// counted as CEF.
func TestCEFFirewallStreamEndToEnd(t *testing.T) {
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer siem.Close()
	p := start(t, testConfig(t, t.TempDir(), siem.Addr().String()))
	attacker := "198.51.100.90"
	line := func(at time.Time, act, rule string, port int) string {
		return octet(fmt.Sprintf("<134>1 %s fw-edge-01 - - - - CEF:0|Palo Alto Networks|PAN-OS|11.1.0|end|TRAFFIC|3|src=%s spt=%d dst=10.1.0.4 dpt=22 proto=tcp act=%s cs1Label=Rule cs1=%s",
			at.Format(time.RFC3339), attacker, port, act, rule))
	}
	var frames []string
	for i := range 10 {
		frames = append(frames, line(t0.Add(time.Duration(i)*10*time.Second), "deny", "deny-inbound-ssh", 40000+i))
	}
	frames = append(frames, line(t0.Add(2*time.Minute), "allow", "allow-ssh-partners", 40100))
	send(t, "tcp", p.tcp, frames...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msgs, err := siem.Wait(ctx, 1)
	if err != nil {
		t.Fatalf("no alert: %v", err)
	}
	p.waitSettled(t, 11)
	time.Sleep(300 * time.Millisecond)
	msgs = siem.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d alerts, want 1: %q", len(msgs), msgs)
	}
	for _, want := range []string{"|firewall-denied-then-allowed|Denied repeatedly, then let through|8|", "src=" + attacker, "dpt=22", "cnt=11", "reason=allow-ssh-partners"} {
		if !strings.Contains(msgs[0], want) {
			t.Errorf("CEF lacks %q: %s", want, msgs[0])
		}
	}
	if got := sumCounters(p.reg, "outpost_syslog_formats_total")[0]; got != 11 {
		t.Errorf("outpost_syslog_formats_total = %v, want 11", got)
	}
}

// With ingest.syslog.attributes at its default (read), an event carries
// the attributes the loaded rules read and none of the others: a rule on
// a CEF extension no field takes fires, the keys no rule reads are
// counted as dropped, and a rule loaded later on another key sees that
// key in the events that follow.
func TestRulesSeeTheAttributesTheyRead(t *testing.T) {
	p, siem, rulesDir := startWithRules(t, "rules:\n  - {id: beacon-category, title: T, kind: match, severity: 5, condition: 'attrs[\"cef.cs3\"] == \"beacon\"', fields: [attrs.cef.cs3]}\n")
	line := func(at time.Time) string {
		return octet(fmt.Sprintf("<134>1 %s proxy-01 - - - - CEF:0|Example|WebProxy|2.0|blocked|URL blocked|5|src=10.1.0.7 request=https://c2.example.net/ cs3Label=Category cs3=beacon cs4Label=Policy cs4=strict-egress flexString1=unused",
			at.Format(time.RFC3339)))
	}
	send(t, "tcp", p.tcp, line(t0))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msgs, err := siem.Wait(ctx, 1)
	if err != nil {
		t.Fatalf("no alert from the rule on cef.cs3: %v", err)
	}
	if !strings.Contains(msgs[0], "|beacon-category|") {
		t.Fatalf("alert: %s", msgs[0])
	}
	// No rule reads cs3Label, cs4Label, cs4, flexString1, nor the header's
	// version, device version, name and severity.
	if got := p.counter("outpost_syslog_attributes_dropped_total"); got != 8 {
		t.Errorf("outpost_syslog_attributes_dropped_total = %v, want 8", got)
	}

	writeRules(t, rulesDir, "b.yaml", "rules:\n  - {id: strict-egress, title: T, kind: match, severity: 5, condition: 'attrs[\"cef.cs4\"] == \"strict-egress\"'}\n")
	if err := p.ReloadRules(); err != nil {
		t.Fatal(err)
	}
	send(t, "tcp", p.tcp, line(t0.Add(time.Minute)))
	msgs, err = siem.Wait(ctx, 3)
	if err != nil {
		t.Fatalf("after the reload: %v (got %q)", err, siem.Messages())
	}
	if !strings.Contains(strings.Join(msgs, "\n"), "|strict-egress|") {
		t.Errorf("no alert from the rule on cef.cs4 loaded later: %q", msgs)
	}
}

// A condition that reads an attribute through $env ($env.attrs["k"]) sees
// it with ingest.syslog.attributes at its default (read), as it does with
// all (found by review: the key was not among those the rules read, so
// the source dropped it and the rule never fired).
func TestRulesReadingAttrsThroughEnvFire(t *testing.T) {
	p, siem, _ := startWithRules(t, "rules:\n  - {id: env-beacon, title: T, kind: match, severity: 5, condition: '$env.attrs[\"cef.cs3\"] == \"beacon\"'}\n")
	send(t, "tcp", p.tcp, octet(fmt.Sprintf("<134>1 %s proxy-01 - - - - CEF:0|Example|WebProxy|2.0|blocked|URL blocked|5|src=10.1.0.7 cs3Label=Category cs3=beacon",
		t0.Format(time.RFC3339))))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs, err := siem.Wait(ctx, 1)
	if err != nil {
		t.Fatalf("no alert from the rule on $env.attrs[\"cef.cs3\"]: %v", err)
	}
	if !strings.Contains(msgs[0], "|env-beacon|") {
		t.Errorf("alert: %s", msgs[0])
	}
}

// startWithRules starts a pipeline whose rules dir holds rules (as a.yaml)
// and a SIEM receiver for its alerts; it returns them and the rules dir.
func startWithRules(t *testing.T, rules string) (*running, *receiver.Receiver, string) {
	t.Helper()
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { siem.Close() })
	cfg := testConfig(t, t.TempDir(), siem.Addr().String())
	cfg.Rules.Dir = t.TempDir()
	writeRules(t, cfg.Rules.Dir, "a.yaml", rules)
	return start(t, cfg), siem, cfg.Rules.Dir
}

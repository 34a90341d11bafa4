package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"testing/iotest"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/ingest/syslog"
	"github.com/outpost-siem/outpost/rules"
	"github.com/outpost-siem/outpost/rules/ruletest"
)

// replayAll replays lines with rs and returns the alerts and the counts.
func replayAll(t testing.TB, lines []byte, rs []*rules.Rule, opts replayOptions) ([]*event.Alert, *replayStats) {
	t.Helper()
	var alerts []*event.Alert
	st, err := replayLog(context.Background(), bytes.NewReader(lines), rs, opts, func(a *event.Alert) error {
		alerts = append(alerts, a)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return alerts, st
}

// TestReplayPackTests replays every test case of the shipped pack whose
// events the syslog source can produce (sshd logon lines, plain messages
// from a host), written as RFC 5424 lines, and one more case that makes
// each sshd rule fire, and requires the alerts rules/ruletest raises for
// the same events: same ids, keys, counts, times, evidence and fields.
func TestReplayPackTests(t *testing.T) {
	set, err := rules.Pack()
	if err != nil {
		t.Fatal(err)
	}
	parser := syslog.NewParser()
	received := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	replayed := 0
	for _, tc := range append(slices.Clone(set.Tests), sshdAttack()) {
		var lines bytes.Buffer
		events := make([]*event.Event, len(tc.Events))
		ok := true
		for i, ev := range tc.Events {
			e := *ev
			e.ID = strconv.Itoa(i + 1) // replay's event ids are line numbers
			if e.Source == "test" {
				e.Source = syslog.SourceName
			}
			line, renderable := syslogLine(&e)
			var parsed event.Event
			if !renderable || parser.Parse(line, received, replaySender, &parsed) != nil || !sameSetFields(&e, &parsed) {
				ok = false
				break
			}
			events[i] = &e
			lines.Write(line)
			lines.WriteByte('\n')
		}
		if !ok {
			continue
		}
		replayed++
		t.Run(tc.Name, func(t *testing.T) {
			asSyslog := *tc
			asSyslog.Events = events
			want, err := ruletest.Alerts(set, &asSyslog)
			if err != nil {
				t.Fatal(err)
			}
			if tc.File != "" {
				if res := ruletest.Run(set, &asSyslog); !res.Pass() {
					t.Fatalf("the test case itself fails with syslog events: %v\n%s", res.Err, res.Diff)
				}
			} else if len(want) < len(tc.Rules) {
				t.Fatalf("%d alerts: every rule of the case should fire", len(want))
			}
			var rs []*rules.Rule
			for _, id := range tc.Rules {
				rs = append(rs, set.Rule(id))
			}
			got, st := replayAll(t, lines.Bytes(), rs, replayOptions{Workers: 2, Received: received, Advance: tc.Advance})
			// The engine's gate drops an event more than 2m behind its
			// host's newest as late, in replay as in rules test: counted.
			late := 0
			newest := map[string]time.Time{}
			for _, e := range events {
				if n, ok := newest[e.Host]; ok && e.Time.Before(n.Add(-2*time.Minute)) {
					late++
				} else if e.Time.After(n) {
					newest[e.Host] = e.Time
				}
			}
			if st.Lines != len(events) || st.Events != len(events) || st.Unparsed != 0 || st.Late != late {
				t.Errorf("counts: %+v, want %d lines and events, %d late", st, len(events), late)
			}
			if g, w := alertJSON(t, got, true), alertJSON(t, want, true); !slices.Equal(g, w) {
				t.Errorf("replay raised\n  %s\nruletest raised\n  %s", strings.Join(g, "\n  "), strings.Join(w, "\n  "))
			}
		})
	}
	// ssh.yaml's and sources.yaml's cases, and sshdAttack.
	if replayed < 7 {
		t.Errorf("only %d of %d test cases could be written as syslog lines", replayed, len(set.Tests)+1)
	}
}

// sshdAttack is an sshd brute force over 12 accounts, then a root logon
// from the same address: ssh-brute-force (a threshold), password-spray (a
// distinct), brute-force-then-success (a sequence) and ssh-root-logon (a
// match) each fire.
func sshdAttack() *rules.Test {
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	tc := &rules.Test{
		Name:  "sshd brute force, spray, then a root logon",
		Rules: []string{"ssh-brute-force", "password-spray", "brute-force-then-success", "ssh-root-logon"},
	}
	for i := range 12 {
		tc.Events = append(tc.Events, &event.Event{
			Source: "test", Time: base.Add(time.Duration(i) * 7 * time.Second), Host: "bastion", App: "sshd",
			Action: "logon", Outcome: "failure", User: fmt.Sprint("user", i), SrcIP: "203.0.113.66",
		})
	}
	tc.Events = append(tc.Events, &event.Event{
		Source: "test", Time: base.Add(2 * time.Minute), Host: "bastion", App: "sshd-session",
		Action: "logon", Outcome: "success", User: "root", SrcIP: "203.0.113.66",
	})
	return tc
}

// syslogLine writes ev as the RFC 5424 line an sshd (or any host) would
// send, or reports that it cannot.
func syslogLine(ev *event.Event) ([]byte, bool) {
	var msg string
	port := " port 50022"
	switch {
	case ev.Action == "logon" && ev.Outcome == "failure":
		msg = "Failed password for " + ev.User + " from " + ev.SrcIP + port + " ssh2"
	case ev.Action == "logon" && ev.Outcome == "success":
		msg = "Accepted password for " + ev.User + " from " + ev.SrcIP + port + " ssh2"
	case ev.Action == "invalid_user":
		msg = "Invalid user " + ev.User + " from " + ev.SrcIP + port
	case ev.Action == "pam_auth":
		msg = "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=" + ev.SrcIP + "  user=" + ev.User
	case ev.Action == "":
		msg = ev.Message
	default:
		return nil, false
	}
	if len(ev.Attrs) > 0 {
		return nil, false
	}
	nil5424 := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	line := fmt.Sprintf("<38>1 %s %s %s - - -", ev.Time.UTC().Format("2006-01-02T15:04:05.000000Z07:00"), nil5424(ev.Host), nil5424(ev.App))
	if msg != "" {
		line += " " + msg
	}
	return []byte(line), true
}

// sameSetFields reports whether parsed has every field the test event set.
func sameSetFields(want, parsed *event.Event) bool {
	same := func(w, p string) bool { return w == "" || w == p }
	return want.Time.Equal(parsed.Time) && want.Source == parsed.Source &&
		same(want.Host, parsed.Host) && same(want.App, parsed.App) && same(want.Message, parsed.Message) &&
		same(want.Category, parsed.Category) && same(want.Action, parsed.Action) && same(want.Outcome, parsed.Outcome) &&
		same(want.User, parsed.User) && same(want.SrcIP, parsed.SrcIP) && same(want.Protocol, parsed.Protocol) &&
		want.DstIP == "" && want.DstPort == 0 && want.SrcPort == 0 && want.ProcID == "" && want.MsgID == ""
}

// alertJSON renders alerts, sorted for comparing sets.
func alertJSON(t testing.TB, alerts []*event.Alert, sorted bool) []string {
	var out []string
	for _, a := range alerts {
		data, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(data))
	}
	if sorted {
		slices.Sort(out)
	}
	return out
}

// sshdLines writes what `go run ./bench/loadgen -mix sshd -n N -ips IPS
// -rate RATE -out FILE` writes, byte for byte (same seed, same draws), and
// replays ssh-brute-force over the lines as loadgen's -expect does: in
// event time, 5 per address within 2m, the window spent on firing, 30m
// suppression. It returns the addresses that must alert.
func sshdLines(n, ips int, rate float64) ([]byte, map[string]bool) {
	users := []string{"root", "admin", "oracle", "ubuntu", "test", "postgres", "git", "deploy"}
	rng := rand.New(rand.NewPCG(1, 0x5eed))
	start := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	type window struct {
		times     []time.Time
		lastAlert time.Time
	}
	windows := map[netip.Addr]*window{}
	alerted := map[string]bool{}
	buf := make([]byte, 0, n*140)
	for i := range n {
		ts := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		v := uint32(10<<24) + 1 + uint32(rng.IntN(ips))
		ip := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		user := users[rng.IntN(len(users))]
		buf = append(buf, "<38>1 "...)
		buf = ts.AppendFormat(buf, "2006-01-02T15:04:05.000000Z07:00")
		buf = fmt.Appendf(buf, " vm-app-eastus2-%03d sshd %d - - Failed password for ", 1+rng.IntN(20), 1000+rng.IntN(90000))
		if user != "root" {
			buf = append(buf, "invalid user "...)
		}
		buf = fmt.Appendf(buf, "%s from %s port %d ssh2\n", user, ip, 1024+rng.IntN(64000))

		w := windows[ip]
		if w == nil {
			w = &window{}
			windows[ip] = w
		}
		w.times = slices.DeleteFunc(w.times, func(x time.Time) bool { return ts.Sub(x) > 2*time.Minute })
		if w.times = append(w.times, ts); len(w.times) < 5 {
			continue
		}
		first := w.times[0]
		w.times = w.times[:0]
		if w.lastAlert.IsZero() || first.Sub(w.lastAlert) >= 30*time.Minute {
			w.lastAlert = ts
			alerted["src_ip="+ip.String()] = true
		}
	}
	return buf, alerted
}

// TestReplayLoadgen replays loadgen's sshd mix and requires the alerts it
// predicts: the counts `loadgen -expect` prints for the same flags, and the
// very addresses.
func TestReplayLoadgen(t *testing.T) {
	set, err := rules.Pack()
	if err != nil {
		t.Fatal(err)
	}
	rs := []*rules.Rule{set.Rule("ssh-brute-force")}
	for _, c := range []struct {
		n, ips  int
		rate    float64
		expect  int // go run ./bench/loadgen -mix sshd -n N -ips IPS -rate RATE -out /dev/null -expect
		workers int
	}{
		{100_000, 1000, 1000, 1000, 2},       // every address, once: the rest is suppressed
		{100_000, 1000, 1000, 1000, 1},       // the same with one worker
		{100_000, 10_000, 100, 1719, 3},      // ~10 failures per address over 16m40s of event time
		{200_000, 100_000, 1000, 2515, 2},    // the 100,000-address case, shorter
		{50_000, 20_000, 1_000_000, 2192, 2}, // the file spans 50 ms: every address with 5 failures
	} {
		t.Run(fmt.Sprintf("n=%d/ips=%d/rate=%g/workers=%d", c.n, c.ips, c.rate, c.workers), func(t *testing.T) {
			lines, want := sshdLines(c.n, c.ips, c.rate)
			if len(want) != c.expect {
				t.Fatalf("the oracle predicts %d alerts, loadgen -expect %d", len(want), c.expect)
			}
			alerts, st := replayAll(t, lines, rs, replayOptions{Workers: c.workers, Received: time.Now()})
			if st.Lines != c.n || st.Events != c.n || st.Matches != c.n || st.Alerts != len(alerts) {
				t.Errorf("counts %+v for %d lines and %d alerts", st, c.n, len(alerts))
			}
			got := map[string]bool{}
			for _, a := range alerts {
				if got[a.Key] {
					t.Errorf("two alerts for %s", a.Key)
				}
				got[a.Key] = true
				if a.Count != 5 || a.Fields["src_ip"] != strings.TrimPrefix(a.Key, "src_ip=") || len(a.EventIDs) != 5 {
					t.Errorf("alert %+v", a)
				}
			}
			if len(got) != len(want) {
				t.Errorf("%d alerts, want %d", len(got), len(want))
			}
			for k := range want {
				if !got[k] {
					t.Errorf("no alert for %s", k)
				}
			}
		})
	}
}

// mixedLines is three hours of syslog, a line a second, from 40 hosts of
// which some fall silent for 20 or 40 minutes, with sshd failures from
// three addresses over 12 accounts and a root logon every 500 lines: the
// whole sshd part of the pack fires (threshold, distinct, sequence, match)
// and log-source-silent too, in the middle of the input and at its end.
func mixedLines() []byte {
	base := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	silent := func(host int, at time.Duration) bool {
		from := time.Duration(host) * 4 * time.Minute
		return host > 0 && at >= from && at < from+time.Duration(host%3)*20*time.Minute
	}
	var b bytes.Buffer
	for i := range 3 * 3600 {
		at := time.Duration(i) * time.Second
		host := i % 40
		if silent(host, at) {
			host = 0
		}
		ts := base.Add(at).Format("2006-01-02T15:04:05.000000Z07:00")
		switch {
		case i%500 == 499:
			fmt.Fprintf(&b, "<38>1 %s host-%02d sshd 7 - - Accepted password for root from 198.51.100.1 port 2222 ssh2\n", ts, host)
		case i%7 == 0:
			fmt.Fprintf(&b, "<38>1 %s host-%02d sshd 7 - - Failed password for invalid user u%d from 198.51.100.%d port 2222 ssh2\n", ts, host, i/21%12, i%3)
		default:
			fmt.Fprintf(&b, "<14>1 %s host-%02d app 9 - - line %d\n", ts, host, i)
		}
	}
	return b.Bytes()
}

// TestReplayWorkers replays mixedLines with the whole pack: the alerts, in
// their order, do not depend on the number of workers and shards, and
// they are the alerts rules/ruletest raises for the parsed events.
func TestReplayWorkers(t *testing.T) {
	set, err := rules.Pack()
	if err != nil {
		t.Fatal(err)
	}
	lines := mixedLines()
	received := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	opts := replayOptions{Workers: 1, Received: received, Advance: time.Hour}
	want, wantSt := replayAll(t, lines, set.Rules, opts)
	byRule := map[string]int{}
	for _, a := range want {
		byRule[a.RuleID]++
	}
	for _, id := range []string{"ssh-brute-force", "password-spray", "brute-force-then-success", "ssh-root-logon", "log-source-silent"} {
		if byRule[id] == 0 {
			t.Errorf("no %s alert; by rule: %v", id, byRule)
		}
	}
	for _, workers := range []int{2, 7} {
		opts.Workers = workers
		got, st := replayAll(t, lines, set.Rules, opts)
		if g, w := alertJSON(t, got, false), alertJSON(t, want, false); !slices.Equal(g, w) || st.Matches != wantSt.Matches {
			t.Errorf("workers=%d: %d alerts (%d matches), want %d (%d), in the same order", workers, len(got), st.Matches, len(want), wantSt.Matches)
		}
	}

	tc := &rules.Test{Name: "mixed", Advance: opts.Advance}
	for _, r := range set.Rules {
		tc.Rules = append(tc.Rules, r.ID)
	}
	p := syslog.NewParser()
	for i, line := range bytes.Split(bytes.TrimSpace(lines), []byte("\n")) {
		ev := &event.Event{}
		if err := p.Parse(line, received, replaySender, ev); err != nil {
			t.Fatal(err)
		}
		ev.ID = strconv.Itoa(i + 1)
		tc.Events = append(tc.Events, ev)
	}
	ref, err := ruletest.Alerts(set, tc)
	if err != nil {
		t.Fatal(err)
	}
	if g, w := alertJSON(t, want, true), alertJSON(t, ref, true); !slices.Equal(g, w) {
		t.Errorf("replay raised %d alerts, ruletest %d; first difference:\n  %s", len(g), len(w), firstDiff(g, w))
	}
}

func firstDiff(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return a[i] + "\n  " + b[i]
		}
	}
	return fmt.Sprintf("%d vs %d alerts", len(a), len(b))
}

// TestReplayCommand runs the command on a file with the lines a real log
// holds: RFC 3164 with and without a PRI, rsyslog's file format, RFC 5424,
// CRLF, blank lines, RFC 5424 go-syslog rejects, a late line, no final
// newline; and from stdin with the summary.
func TestReplayCommand(t *testing.T) {
	var b strings.Builder
	fail := "bastion sshd[42]: Failed password for root from 203.0.113.5 port 4000%d ssh2"
	fmt.Fprintf(&b, "<38>Nov 23 10:00:00 "+fail+"\r\n", 0)
	fmt.Fprintf(&b, "Nov 23 10:00:10 "+fail+"\n", 1)                  // /var/log/auth.log
	fmt.Fprintf(&b, "2026-11-23T10:00:20.000000+00:00 "+fail+"\n", 2) // RSYSLOG_FileFormat
	fmt.Fprintf(&b, "<38>1 2026-11-23T10:00:30Z bastion sshd 42 - - Failed password for root from 203.0.113.5 port 40003 ssh2\n")
	fmt.Fprintf(&b, "<38>Nov 23 10:00:40 "+fail+"\n", 4)
	fmt.Fprintf(&b, "<38>Nov 23 10:00:50 "+fail+"\n", 5)
	b.WriteString("\n")
	b.WriteString("<38>1 not-a-timestamp bastion sshd - - - Failed password for root from 203.0.113.9 port 1 ssh2\n")
	b.WriteString("<38>Nov 23 09:50:00 bastion sshd[42]: Failed password for root from 203.0.113.7 port 1 ssh2\n") // 10m behind bastion: late
	b.WriteString("<38>Nov 23 10:01:00 bastion sshd[42]: Accepted password for root from 203.0.113.5 port 1 ssh2") // no final newline
	file := filepath.Join(t.TempDir(), "auth.log")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"rules", "replay", "--input", file, "--received", "2026-11-23T12:00:00Z"}

	cmd := newRootCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(append(args, "--rule", "ssh-brute-force", "--rule", "ssh-root-logon"))
	if err := cmd.Execute(); err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	var alerts []event.Alert
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var a event.Alert
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatalf("%v: %q", err, line)
		}
		alerts = append(alerts, a)
	}
	if len(alerts) != 2 || alerts[0].RuleID != "ssh-brute-force" || alerts[1].RuleID != "ssh-root-logon" {
		t.Fatalf("alerts: %s", out.String())
	}
	bf := alerts[0]
	wantFirst := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	if bf.Key != "src_ip=203.0.113.5" || bf.Count != 5 || !bf.FirstSeen.Equal(wantFirst) ||
		!slices.Equal(bf.EventIDs, []string{"1", "2", "3", "4", "5"}) || bf.Fields["host"] != "bastion" {
		t.Errorf("brute force alert: %+v", bf)
	}
	if !slices.Equal(alerts[1].EventIDs, []string{"10"}) {
		t.Errorf("root logon alert: %+v", alerts[1])
	}
	report := errOut.String()
	if !strings.Contains(report, "replay: lines=10 events=8 unparsed=1 late=1 matches=7 alerts=2 seconds=") {
		t.Errorf("report: %s", report)
	}

	cmd = newRootCmd()
	out.Reset()
	errOut.Reset()
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetIn(strings.NewReader(b.String()))
	cmd.SetArgs([]string{"rules", "replay", "--input", "-", "--received", "2026-11-23T12:00:00Z", "--format", "summary"})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	rows := map[string]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			rows[f[0]] = strings.Join(f, " ")
		}
	}
	for _, want := range []string{
		"RULE KIND MATCHES NO_KEY SUPPRESSED ALERTS",
		"ssh-brute-force threshold 6 0 0 1",
		"ssh-root-logon match 1 0 0 1",
		"log-source-silent absence 7 0 0 0", // 8 events, one late
	} {
		if f := strings.Fields(want); rows[f[0]] != want {
			t.Errorf("summary: want %q, got %q:\n%s", want, rows[f[0]], out.String())
		}
	}

	for _, bad := range [][]string{
		{"--rule", "no-such-rule"},
		{"--format", "xml"},
		{"--timezone", "Mars/Olympus"},
		{"--workers", "0"},
		{"--advance", "-1m"},
		{"--received", "yesterday"},
		{"--input", filepath.Join(t.TempDir(), "missing.log")},
	} {
		if _, err := execute(append(slices.Clone(args), bad...)...); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
	if out, err := execute("rules", "replay"); err == nil || !strings.Contains(out, `"input" not set`) {
		t.Errorf("without --input: %v %s", err, out)
	}
}

// BenchmarkReplay is the command's engine on loadgen's sshd mix with
// ssh-brute-force, in memory: parse, condition, windows, with the GOGC the
// command sets. One op is one replay of the lines; lines/s is the figure
// to compare with SEC (bench/engine/run.sh runs the command itself).
func BenchmarkReplay(b *testing.B) {
	set, err := rules.Pack()
	if err != nil {
		b.Fatal(err)
	}
	defer debug.SetGCPercent(debug.SetGCPercent(replayGCPercent))
	rs := []*rules.Rule{set.Rule("ssh-brute-force")}
	const n = 200_000
	for _, ips := range []int{1000, 100_000} {
		lines, _ := sshdLines(n, ips, 1000)
		b.Run(fmt.Sprintf("ips=%d", ips), func(b *testing.B) {
			b.SetBytes(int64(len(lines)))
			b.ReportAllocs()
			for b.Loop() {
				replayAll(b, lines, rs, replayOptions{Received: time.Now()})
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
		})
	}
}

// TestReplayDeadlinesInTime: deadlines fire as the watermark passes them
// during the replay, as the windows stage's timers fire them while logs
// arrive, not only at the end of the input. A second trigger after the
// first deadline fired arms the rule again; had the deadline been checked
// only at the end (as rules/ruletest does), the key would still have been
// armed and the second silence missed.
func TestReplayDeadlinesInTime(t *testing.T) {
	dir := t.TempDir()
	rule := `rules:
  - id: root-logon-without-ticket
    title: Root logon without a change ticket
    kind: absence
    severity: medium
    condition: app == "sshd" && action == "logon" && outcome == "success" && user == "root"
    expect: app == "ticket"
    group_by: [host]
    for: 10m
    fields: [host]
`
	if err := os.WriteFile(filepath.Join(dir, "r.yaml"), []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := rules.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	lines := []byte(`<38>1 2026-11-23T10:00:00Z web-01 sshd 1 - - Accepted publickey for root from 192.0.2.1 port 2222 ssh2
<38>1 2026-11-23T10:05:00Z web-01 ticket 1 - - CHG-1 opened
<38>1 2026-11-23T10:06:00Z web-01 sshd 1 - - Accepted publickey for root from 192.0.2.1 port 2222 ssh2
<38>1 2026-11-23T10:25:00Z web-02 ticket 1 - - CHG-2 opened
<38>1 2026-11-23T10:30:00Z web-01 sshd 1 - - Accepted publickey for root from 192.0.2.1 port 2222 ssh2
<38>1 2026-11-23T10:31:00Z web-02 sshd 1 - - Accepted publickey for root from 192.0.2.1 port 2222 ssh2
<38>1 2026-11-23T10:32:00Z web-02 ticket 1 - - CHG-3 opened
`)
	for _, advance := range []time.Duration{0, time.Hour} {
		alerts, st := replayAll(t, lines, set.Rules, replayOptions{Workers: 2, Received: time.Now(), Advance: advance})
		var got []string
		for _, a := range alerts {
			got = append(got, fmt.Sprintf("%s %s %s", a.Key, a.FirstSeen.Format("15:04"), strings.Join(a.EventIDs, ",")))
		}
		// web-01: armed at 10:00 and ended by the ticket; armed at 10:06
		// and due at 10:16, which the watermark passes at the web-02
		// ticket (10:25 - 2m); armed again at 10:30, due at 10:40, after
		// the input: it fires only when the watermark moves on. web-02:
		// armed at 10:31, ended at 10:32.
		want := []string{"host=web-01 10:06 3"}
		if advance > 0 {
			want = append(want, "host=web-01 10:30 5")
		}
		if !slices.Equal(got, want) || st.Matches != 7 {
			t.Errorf("advance %s: alerts %q (%d matches), want %q", advance, got, st.Matches, want)
		}
	}
}

// TestReplayStops: a failing output or input ends the replay with its
// error, with every goroutine gone, however much input is left.
func TestReplayStops(t *testing.T) {
	set, err := rules.Pack()
	if err != nil {
		t.Fatal(err)
	}
	rs := []*rules.Rule{set.Rule("ssh-brute-force")}
	lines, _ := sshdLines(200_000, 100, 1000)
	goroutines := runtime.NumGoroutine()
	closed := errors.New("output closed")
	emitted := 0
	_, err = replayLog(context.Background(), bytes.NewReader(lines), rs, replayOptions{Workers: 2}, func(*event.Alert) error {
		if emitted++; emitted == 3 {
			return closed
		}
		return nil
	})
	if !errors.Is(err, closed) || emitted != 3 {
		t.Errorf("emit failing: err %v after %d alerts", err, emitted)
	}

	broken := errors.New("disk gone")
	in := io.MultiReader(bytes.NewReader(lines[:1<<20]), iotest.ErrReader(broken))
	if _, err := replayLog(context.Background(), in, rs, replayOptions{Workers: 2}, func(*event.Alert) error { return nil }); !errors.Is(err, broken) {
		t.Errorf("input failing: err %v", err)
	}
	// Goroutines of earlier tests may still be on their way out: wait a
	// little for the count to come down; a leak would stay.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines {
		t.Errorf("%d goroutines left, %d before", n, goroutines)
	}
}

// TestReplayEvalErrors: a condition that fails at run time is no match,
// as in the rule filter, counted and reported with its first line.
func TestReplayEvalErrors(t *testing.T) {
	dir := t.TempDir()
	rule := `rules:
  - id: busy-process
    title: Busy process
    kind: match
    severity: low
    condition: int(proc_id) > 100
    group_by: [host]
`
	if err := os.WriteFile(filepath.Join(dir, "r.yaml"), []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := rules.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	lines := "<14>1 2026-11-23T10:00:00Z web-01 app 200 - - hello\n<14>1 2026-11-23T10:00:01Z web-01 app abc - - hello\n"
	var out, report bytes.Buffer
	if err := runReplay(context.Background(), strings.NewReader(lines), &out, &report, set.Rules, "summary", replayOptions{Workers: 1}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(report.String(), "replay: rule busy-process: condition failed at run time on 1 events, treated as no match (first: line 2: ") ||
		!strings.Contains(report.String(), " matches=1 alerts=1 ") {
		t.Errorf("report:\n%s", report.String())
	}
}

// The rule filter's attack, in replay: one line claiming host=victim01,
// stamped 4m50s after its reception, must not make the 20 genuine victim01
// lines after it late.
func TestReplayForgedFutureStamp(t *testing.T) {
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(`
rules:
  - {id: victim-event, title: T, kind: match, severity: 5, condition: 'host == "victim01"', group_by: [host]}
`)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	received := time.Date(2026, 12, 1, 18, 0, 30, 0, time.UTC)
	var lines bytes.Buffer
	fmt.Fprintf(&lines, "<13>1 %s victim01 sshd - - - forged\n", received.Add(4*time.Minute+50*time.Second).Format(time.RFC3339))
	for i := range 20 {
		fmt.Fprintf(&lines, "<13>1 %s victim01 sshd - - - genuine %d\n", received.Add(time.Duration(i-30)*time.Second).Format(time.RFC3339), i)
	}
	alerts, st := replayAll(t, lines.Bytes(), set.Rules, replayOptions{Workers: 2, Received: received})
	if st.Late != 0 || len(alerts) != 21 {
		t.Errorf("late=%d alerts=%d, want late=0 alerts=21 (the forged line and 20 genuine ones)", st.Late, len(alerts))
	}
}

// The reproduction: an absence alert from replay carries the rule's
// fields (log-source-silent: host, which the CEF encoder sends as dhost).
func TestReplayAbsenceAlertCarriesFields(t *testing.T) {
	set, err := rules.Pack()
	if err != nil {
		t.Fatal(err)
	}
	rs, err := selectRules(set, []string{"log-source-silent"})
	if err != nil {
		t.Fatal(err)
	}
	line := []byte("<13>1 2026-12-01T18:00:00Z web-01 cron 1 - - hello\n")
	alerts, _ := replayAll(t, line, rs, replayOptions{Workers: 1, Advance: time.Hour, Received: time.Date(2026, 12, 1, 18, 0, 1, 0, time.UTC)})
	if len(alerts) != 1 || alerts[0].Fields["host"] != "web-01" {
		t.Fatalf("alerts %s, want one with fields.host=web-01", alertJSON(t, alerts, false))
	}
}

// An absence rule in replay: victim01 sends every 5 minutes until a minute
// before the reception time, then one line claiming victim01 stamped 2099
// (received, as every line, at --received), then silence. The silence
// counts from that reception: it fires once the watermark passes 30m after
// it, not at once (as a gap up to 2099) and not never.
func TestReplayForgedFutureStampAbsence(t *testing.T) {
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(`
rules:
  - {id: silent, title: T, kind: absence, severity: 5, condition: 'host != ""', group_by: [host], for: 30m, fields: [host]}
`)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	received := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	var lines bytes.Buffer
	for at := received.Add(-46 * time.Minute); at.Before(received); at = at.Add(5 * time.Minute) {
		fmt.Fprintf(&lines, "<13>1 %s victim01 sshd - - - genuine\n", at.Format(time.RFC3339))
	}
	fmt.Fprintf(&lines, "<13>1 2099-01-01T00:00:00Z victim01 sshd - - - forged\n")
	for _, tc := range []struct {
		advance time.Duration
		fires   bool
	}{
		{31 * time.Minute, false}, // the watermark, 29m past the reception, is before the deadline
		{33 * time.Minute, true},
	} {
		alerts, _ := replayAll(t, lines.Bytes(), set.Rules, replayOptions{Workers: 2, Received: received, Advance: tc.advance})
		var since []string
		for _, a := range alerts {
			since = append(since, a.FirstSeen.Format(time.RFC3339))
		}
		if tc.fires && (len(alerts) != 1 || !alerts[0].FirstSeen.Equal(received) || alerts[0].Fields["host"] != "victim01") {
			t.Errorf("advance %s: silences since %v, want one, victim01's since %s", tc.advance, since, received.Format(time.RFC3339))
		}
		if !tc.fires && len(alerts) != 0 {
			t.Errorf("advance %s: silences since %v, want none yet", tc.advance, since)
		}
	}
}

// --input-format events: each line a normalized event as JSON. An event
// keeps its own id, received and sender; one without an id gets its line
// number. A line that is not an event (not JSON, JSON of another shape, no
// time) counts as unparsed and the replay goes on; an unknown value for
// the flag is refused.
func TestReplayEventsFormat(t *testing.T) {
	var b strings.Builder
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for i := range 5 {
		fmt.Fprintf(&b, `{"id":"sig-%d","time":%q,"source":"azure.signin","action":"logon","outcome":"failure","user":"u%d@contoso.example","src_ip":"203.0.113.9","received":%q}`+"\n",
			i, base.Add(time.Duration(i)*10*time.Second).Format(time.RFC3339), i, base.Add(time.Hour).Format(time.RFC3339))
	}
	b.WriteString("not json\n")
	b.WriteString(`{"time": 42}` + "\n")
	b.WriteString(`{"source":"syslog","host":"web-01","message":"no time"}` + "\n")
	for i := 5; i < 10; i++ {
		fmt.Fprintf(&b, `{"time":%q,"source":"azure.signin","action":"logon","outcome":"failure","user":"u%d@contoso.example","src_ip":"203.0.113.9"}`+"\n",
			base.Add(time.Duration(i)*10*time.Second).Format(time.RFC3339), i)
	}
	file := filepath.Join(t.TempDir(), "events.jsonl")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := newRootCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs([]string{"rules", "replay", "--input", file, "--input-format", "events", "--rule", "password-spray", "--received", "2026-11-23T12:00:00Z"})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	var a event.Alert
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &a); err != nil {
		t.Fatalf("%v: %q", err, out.String())
	}
	// Ten accounts from one address: a spray, its evidence the events'
	// own ids and, for those without, their line numbers.
	wantIDs := []string{"sig-0", "sig-1", "sig-2", "sig-3", "sig-4", "9", "10", "11", "12", "13"}
	if a.RuleID != "password-spray" || a.Count != 10 || !slices.Equal(a.EventIDs, wantIDs) {
		t.Errorf("alert %+v, want password-spray over %v", a, wantIDs)
	}
	if !strings.Contains(errOut.String(), "replay: lines=13 events=10 unparsed=3 late=0 ") {
		t.Errorf("report: %s", errOut.String())
	}

	cmd = newRootCmd()
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	cmd.SetArgs([]string{"rules", "replay", "--input", file, "--input-format", "cef"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--input-format: want syslog or events") {
		t.Errorf("--input-format cef: %v", err)
	}
}

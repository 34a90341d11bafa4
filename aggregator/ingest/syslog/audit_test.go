package syslog

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// TestAuditRecordsJoined: the records of one audit event, sent over TCP as
// audisp-syslog writes them, each stay an event, and the later ones carry
// what the SYSCALL said (who, which binary, the rule's key) and the command
// line; another host's serial, interleaved, is kept apart; a record whose
// SYSCALL was never seen is left as it is.
func TestAuditRecordsJoined(t *testing.T) {
	sink := &memSink{}
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{"127.0.0.1:0"}}, sink)
	rec := func(host, body string) string {
		return fmt.Sprintf("<85>Dec  4 10:00:00 %s audisp-syslog: %s\n", host, body)
	}
	lines := []string{
		rec("web-01", `type=SYSCALL msg=audit(1764842400.123:4242): arch=c000003e syscall=59 success=yes exit=0 ppid=1 pid=4300 auid=1000 uid=0 comm="curl" exe="/usr/bin/curl" key="exec"`),
		rec("web-02", `type=SYSCALL msg=audit(1764842400.124:4242): arch=c000003e syscall=59 success=no exit=-13 ppid=1 pid=77 auid=1001 uid=0 comm="sh" exe="/bin/sh" key=(null)`),
		rec("web-01", `type=EXECVE msg=audit(1764842400.123:4242): argc=3 a0="curl" a1="-o" a2="/tmp/x"`),
		rec("web-01", `type=CWD msg=audit(1764842400.123:4242): cwd="/root"`),
		rec("web-01", `type=PATH msg=audit(1764842400.123:4242): item=0 name="/usr/bin/curl" inode=1 nametype=NORMAL`),
		rec("web-02", `type=EXECVE msg=audit(1764842400.124:4242): argc=1 a0="sh"`),
		rec("web-01", `type=EOE msg=audit(1764842400.123:4242): `),
		rec("web-01", `type=PROCTITLE msg=audit(1764842400.123:4242): proctitle=6375726C`), // after EOE: alone
		rec("web-03", `type=EXECVE msg=audit(1764842400.125:9): argc=1 a0="id"`),           // no SYSCALL seen
	}
	c := dial(t, "tcp", ts.tcpAddr())
	write(t, c, strings.Join(lines, ""))
	evs, _ := sink.wait(t, len(lines), 0)
	get := func(i int, f string) string {
		ev := evs[i]
		switch f {
		case "user":
			return ev.User
		case "outcome":
			return ev.Outcome
		}
		return ev.Attrs[f]
	}
	for _, tc := range []struct {
		i           int
		field, want string
	}{
		{0, "audit_key", "exec"},
		{2, "user", "1000"}, {2, event.FieldProcess, "/usr/bin/curl"}, {2, event.FieldProcessID, "4300"},
		{2, "outcome", "success"}, {2, "audit_key", "exec"}, {2, event.FieldCommandLine, "curl -o /tmp/x"},
		{2, "audit_records", "SYSCALL,EXECVE"},
		{3, "user", "1000"}, {3, event.FieldCommandLine, "curl -o /tmp/x"},
		{4, "audit_records", "SYSCALL,EXECVE,CWD,PATH"}, {4, event.FieldProcess, "/usr/bin/curl"},
		{5, "user", "1001"}, {5, "outcome", "failure"}, {5, event.FieldProcess, "/bin/sh"}, {5, "audit_key", ""},
		{5, event.FieldCommandLine, "sh"},
		{7, "user", ""}, {7, "audit_records", ""},
		{8, "user", ""}, {8, event.FieldProcess, ""}, {8, event.FieldCommandLine, "id"},
	} {
		if got := get(tc.i, tc.field); got != tc.want {
			t.Errorf("event %d (%s) %s = %q, want %q", tc.i, evs[tc.i].Attrs[event.FieldEventCode], tc.field, got, tc.want)
		}
	}
}

// TestAuditJoinBounded: a flood of serials that never end keeps at most
// auditJoinKeys in memory.
func TestAuditJoinBounded(t *testing.T) {
	j := newAuditJoiner()
	for i := range 3 * auditJoinKeys {
		ev := &event.Event{Host: "h", Attrs: map[string]string{"audit_serial": fmt.Sprint(i), event.FieldEventCode: "SYSCALL"}}
		j.join(ev)
	}
	if n := len(j.m); n > auditJoinKeys {
		t.Fatalf("%d serials remembered, bound %d", n, auditJoinKeys)
	}
	// The newest is still joined.
	ev := &event.Event{Host: "h", Attrs: map[string]string{"audit_serial": fmt.Sprint(3*auditJoinKeys - 1), event.FieldEventCode: "EXECVE"}}
	j.join(ev)
	if ev.Attrs["audit_records"] != "SYSCALL,EXECVE" {
		t.Fatalf("the newest serial was forgotten: %v", ev.Attrs)
	}
}

// FuzzAudit feeds audit records, as audisp-syslog forwards them, through
// the parse and the join in order: a record of any bytes neither panics
// nor yields invalid text or another host, and what the join adds stays
// within its bounds.
func FuzzAudit(f *testing.F) {
	for _, s := range []string{
		"type=SYSCALL msg=audit(1764842400.123:4242): arch=c000003e syscall=59 success=yes exit=0 pid=4300 auid=1000 comm=\"curl\" exe=\"/usr/bin/curl\" key=\"exec\"\n" +
			"type=EXECVE msg=audit(1764842400.123:4242): argc=3 a0=\"curl\" a1=\"-o\" a2=2F746D702F78\n" +
			"type=PATH msg=audit(1764842400.123:4242): item=0 name=\"/usr/bin/curl\" nametype=NORMAL\n" +
			"type=EOE msg=audit(1764842400.123:4242): ",
		"type=USER_AUTH msg=audit(1.2:3): pid=1 uid=0 auid=4294967295 msg='op=PAM:authentication acct=\"root\" exe=\"/usr/sbin/sshd\" addr=203.0.113.5 res=failed'",
		"type=ADD_USER msg=audit(5.6:7): pid=9 auid=1000 msg='op=add-user id=1002 exe=\"/usr/sbin/useradd\" acct=\"mallory\" res=success'\ntype=EOE msg=audit(5.6:7): ",
		"type=SYSCALL msg=audit(1:1): key=(null) success=no\ntype=EXECVE msg=audit(1:1): argc=70 a0=\"x\" a63=\"y\" a64=\"z\"",
	} {
		f.Add([]byte(s), uint8(1))
	}
	received := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte, hosts uint8) {
		lines := strings.Split(string(data), "\n")
		if len(lines) > 64 {
			lines = lines[:64]
		}
		p := NewParser(WithReusedAttrs())
		j := newAuditJoiner()
		var ev event.Event
		for i, body := range lines {
			host := fmt.Sprintf("h%d", i%(1+int(hosts%4)))
			msg := fmt.Sprintf("<85>Dec  4 10:00:00 %s audisp-syslog: %s", host, body)
			if err := p.Parse([]byte(msg), received, "127.0.0.1:514", &ev); err != nil {
				continue // only RFC 5424 is rejected; these are RFC 3164
			}
			j.join(&ev)
			for _, s := range []string{ev.Host, ev.App, ev.Message, ev.User, ev.Outcome, ev.Action} {
				if !utf8.ValidString(s) {
					t.Fatalf("line %d: invalid UTF-8 %q", i, s)
				}
			}
			for k, v := range ev.Attrs {
				if !utf8.ValidString(k) || !utf8.ValidString(v) {
					t.Fatalf("line %d: attribute %q: invalid UTF-8", i, k)
				}
			}
			if ev.Host != host {
				t.Fatalf("line %d: host %q, sent as %q", i, ev.Host, host)
			}
			if recs := ev.Attrs["audit_records"]; len(recs) > 256+64 {
				t.Fatalf("line %d: audit_records of %d bytes", i, len(recs))
			}
		}
		if len(j.m) > auditJoinKeys {
			t.Fatalf("%d serials remembered", len(j.m))
		}
	})
}

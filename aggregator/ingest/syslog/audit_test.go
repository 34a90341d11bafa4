package syslog

import (
	"fmt"
	"strings"
	"testing"

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

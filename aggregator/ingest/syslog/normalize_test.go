package syslog

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

func TestNormalize(t *testing.T) {
	type logon struct {
		Action, Outcome, User, SrcIP string
		SrcPort                      int
	}
	tests := []struct {
		name string
		app  string
		msg  string
		want *logon // nil: not recognized, no field set
	}{
		{"failed password", "sshd", "Failed password for root from 203.0.113.5 port 22 ssh2",
			&logon{"logon", "failure", "root", "203.0.113.5", 22}},
		{"failed password invalid user", "sshd", "Failed password for invalid user admin from 203.0.113.5 port 41234 ssh2",
			&logon{"logon", "failure", "admin", "203.0.113.5", 41234}},
		{"invalid user", "sshd", "Invalid user admin from 203.0.113.5 port 41234",
			&logon{"invalid_user", "failure", "admin", "203.0.113.5", 41234}},
		{"invalid empty user", "sshd", "Invalid user  from 203.0.113.5 port 41234",
			&logon{"invalid_user", "failure", "", "203.0.113.5", 41234}},
		{"failed publickey", "sshd", "Failed publickey for git from 2001:db8::7 port 50000 ssh2: RSA SHA256:Zm9vYmFy",
			&logon{"logon", "failure", "git", "2001:db8::7", 50000}},
		{"failed keyboard-interactive", "sshd", "Failed keyboard-interactive/pam for invalid user oracle from 198.51.100.2 port 6000 ssh2",
			&logon{"logon", "failure", "oracle", "198.51.100.2", 6000}},
		{"pam_unix failure", "sshd", "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.5  user=root",
			&logon{"pam_auth", "failure", "root", "203.0.113.5", 0}},
		{"pam_unix failure unknown user", "sshd", "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.5",
			&logon{"pam_auth", "failure", "", "203.0.113.5", 0}},
		{"pam_unix failure host name", "sshd", "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=scanner.example.net  user=root",
			&logon{"pam_auth", "failure", "root", "", 0}},
		{"accepted password", "sshd", "Accepted password for alice from 198.51.100.7 port 50022 ssh2",
			&logon{"logon", "success", "alice", "198.51.100.7", 50022}},
		{"accepted publickey sshd-session", "sshd-session", "Accepted publickey for alice from 198.51.100.7 port 50022 ssh2: ED25519 SHA256:Zm9v",
			&logon{"logon", "success", "alice", "198.51.100.7", 50022}},
		{"IPv4-mapped address is unmapped", "sshd", "Accepted password for bob from ::ffff:192.0.2.10 port 22 ssh2",
			&logon{"logon", "success", "bob", "192.0.2.10", 22}},
		{"UseDNS host name: logon without an IP", "sshd", "Failed password for root from scanner.example.net port 22 ssh2",
			&logon{"logon", "failure", "root", "", 22}},
		{"spoofing user name: real address is the last one", "sshd",
			"Failed password for invalid user x from 10.0.0.1 port 1 ssh2 from 203.0.113.5 port 4444 ssh2",
			&logon{"logon", "failure", "x from 10.0.0.1 port 1 ssh2", "203.0.113.5", 4444}},
		{"spoofing pam user", "sshd",
			"pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.5  user=x rhost=10.0.0.1",
			&logon{"pam_auth", "failure", "x rhost=10.0.0.1", "203.0.113.5", 0}},
		{"bad port", "sshd", "Failed password for root from 203.0.113.5 port 99999 ssh2",
			&logon{"logon", "failure", "root", "203.0.113.5", 0}},

		{"other app", "su", "Failed password for root from 203.0.113.5 port 22 ssh2", nil},
		{"no app", "", "Accepted password for alice from 198.51.100.7 port 50022 ssh2", nil},
		{"connection closed", "sshd", "Connection closed by authenticating user root 203.0.113.5 port 22 [preauth]", nil},
		{"disconnected", "sshd", "Disconnected from invalid user admin 203.0.113.5 port 41234 [preauth]", nil},
		{"session opened", "sshd", "pam_unix(sshd:session): session opened for user alice(uid=1000) by (uid=0)", nil},
		{"failed without from", "sshd", "Failed password for root", nil},
		{"failed method with spaces", "sshd", "Failed to do something for x from 1.2.3.4 port 1", nil},
		{"failed nothing", "sshd", "Failed ", nil},
		{"empty address", "sshd", "Invalid user admin from ", nil},
		{"pam other", "sshd", "pam_unix(sshd:auth): check pass; user unknown", nil},
		{"empty", "sshd", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := event.Event{App: tt.app, Message: tt.msg}
			normalize(&ev, nil, nil)
			if tt.want == nil {
				if !reflect.DeepEqual(ev, event.Event{App: tt.app, Message: tt.msg}) {
					t.Errorf("normalize(%q) set fields: %+v", tt.msg, ev)
				}
				return
			}
			want := event.Event{
				App: tt.app, Message: tt.msg,
				Category: "authentication", Action: tt.want.Action, Protocol: "ssh",
				Outcome: tt.want.Outcome, User: tt.want.User, SrcIP: tt.want.SrcIP, SrcPort: tt.want.SrcPort,
			}
			if !reflect.DeepEqual(ev, want) {
				t.Errorf("normalize(%q)\n got %+v\nwant %+v", tt.msg, ev, want)
			}
		})
	}
}

func TestNormalizeWindowsLogon(t *testing.T) {
	p := NewParser()
	var ev event.Event
	msg := `<86>1 2026-11-23T10:00:00Z dc-01 Microsoft-Windows-Security-Auditing 612 - [NXLOG@14506 EventID="4624" TargetUserName="administrator" TargetDomainName="CONTOSO" IpAddress="203.0.113.70" IpPort="50123" LogonType="10"] An account was successfully logged on.`
	if err := p.Parse([]byte(msg), time.Now(), "127.0.0.1:514", &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Category != "authentication" || ev.Action != "logon" || ev.Outcome != "success" || ev.User != "administrator" ||
		ev.SrcIP != "203.0.113.70" || ev.SrcPort != 50123 || ev.Attrs["logon_type"] != "10" {
		t.Errorf("event %+v", ev)
	}
	ev = event.Event{}
	msg = `<86>1 2026-11-23T10:00:00Z dc-01 Microsoft-Windows-Security-Auditing 612 - [NXLOG@14506 EventID="4625" TargetUserName="bob" IpAddress="-" LogonType="3"] An account failed to log on.`
	if err := p.Parse([]byte(msg), time.Now(), "127.0.0.1:514", &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Outcome != "failure" || ev.SrcIP != "" || ev.User != "bob" {
		t.Errorf("event %+v", ev)
	}
	ev = event.Event{}
	msg = `<86>1 2026-11-23T10:00:00Z dc-01 Microsoft-Windows-Security-Auditing 612 - [NXLOG@14506 EventID="4688"] A new process has been created.`
	if err := p.Parse([]byte(msg), time.Now(), "127.0.0.1:514", &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Action == "logon" || ev.Outcome != "" {
		t.Errorf("4688 normalized as a logon: %q %q", ev.Action, ev.Outcome)
	}
}

// A message in a structured format is read whatever the syslog header:
// RFC 3164 whose TAG took "CEF", RFC 5424, and no header at all; a message
// that only looks like one stays as it was, counted.
func TestPayloadFormats(t *testing.T) {
	p := NewParser()
	var formats []string
	p.payload = func(f string, ok bool) { formats = append(formats, fmt.Sprintf("%s %v", f, ok)) }
	for _, tc := range []struct{ msg, app, src, action string }{
		{"<134>Dec  4 10:00:00 fw01 CEF:0|Fortinet|FortiGate-VM64|7.4.3|13|denied|5|src=203.0.113.66 dst=10.0.2.5 dpt=22 act=deny", "FortiGate-VM64", "203.0.113.66", "deny"},
		{"<134>1 2026-12-04T10:00:00Z fw01 - - - - LEEF:2.0|Lancope|StealthWatch|1.0|41|^|src=10.0.1.8^action=blocked", "StealthWatch", "10.0.1.8", "blocked"},
		{`date=2026-12-04 srcip=192.0.2.4 action="accept" devname="fw"`, "", "192.0.2.4", "accept"},
		{`<14>1 2026-12-04T10:00:00Z app01 billing 42 - - {"event":{"action":"login"},"source":{"ip":"198.51.100.1"}}`, "billing", "198.51.100.1", "login"},
		{"<134>1 2026-12-04T10:00:00Z fw01 - - - - CEF:0|truncated", "", "", ""},
	} {
		var ev event.Event
		if err := p.Parse([]byte(tc.msg), time.Now(), "127.0.0.1:514", &ev); err != nil {
			t.Fatal(err)
		}
		if ev.App != tc.app || ev.SrcIP != tc.src || ev.Action != tc.action {
			t.Errorf("%s: app %q src %q action %q, want %q %q %q", tc.msg, ev.App, ev.SrcIP, ev.Action, tc.app, tc.src, tc.action)
		}
	}
	if want := []string{"cef true", "leef true", "kv true", "json true", "cef false"}; !slices.Equal(formats, want) {
		t.Errorf("counted %v, want %v", formats, want)
	}
}

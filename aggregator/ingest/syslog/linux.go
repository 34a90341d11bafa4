package syslog

import (
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// Linux: what sudo, su, the shadow utilities (useradd, usermod, userdel,
// groupadd, passwd), systemd-logind, the kernel's packet filter (iptables,
// nftables, ufw) and auditd (through audisp-syslog or rsyslog's imfile)
// write to syslog, each by its app name. docs/fields.md lists the fields.

// normalizeLinux fills ev from a Linux service's line; it reports whether
// it recognized one.
func normalizeLinux(ev *event.Event) bool {
	msg := strings.TrimSpace(ev.Message) // sudo pads the user name
	switch ev.App {
	case "sudo":
		return normalizeSudo(ev, msg)
	case "su":
		return normalizeSu(ev, msg)
	case "useradd", "usermod", "userdel", "groupadd", "groupdel", "gpasswd", "passwd", "chpasswd", "chage":
		return normalizeShadow(ev, msg)
	case "systemd-logind":
		return normalizeLogind(ev, msg)
	case "kernel":
		return normalizePacketFilter(ev, msg)
	}
	if ev.Attrs["kv.type"] != "" && strings.Contains(ev.Message, "msg=audit(") {
		return normalizeAudit(ev)
	}
	return false
}

// sudo: "alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id -u"
// and the failures before the TTY: "alice : 3 incorrect password attempts ;
// ...", "alice : user NOT in sudoers ; ...", "alice : command not allowed ; ...".
// pam_unix's "pam_unix(sudo:auth): authentication failure; ... user=alice"
// is the failed attempt of a password.
func normalizeSudo(ev *event.Event, msg string) bool {
	if strings.HasPrefix(msg, "pam_unix(sudo:auth): authentication failure") {
		ev.Category, ev.Action, ev.Outcome = "authentication", "pam_auth", "failure"
		setUser(ev, pamField(msg, "user"))
		return true
	}
	user, rest, ok := strings.Cut(msg, " : ")
	if !ok || user == "" || strings.ContainsAny(user, " ;") {
		return false
	}
	// COMMAND comes last and may itself hold " ; ".
	head, command, ok := strings.Cut(rest, " ; COMMAND=")
	if !ok {
		head, command, ok = strings.Cut(rest, "COMMAND=")
		if !ok || head != "" {
			return false
		}
	}
	failure, target := "", ""
	for i, part := range strings.Split(head, " ; ") {
		if k, v, ok := strings.Cut(part, "="); ok && isUpperWord(k) {
			if k == "USER" {
				target = v
			}
		} else if i == 0 {
			failure = part
		}
	}
	ev.Category, ev.Action, ev.Outcome = "authentication", "sudo", "success"
	if strings.Count(rest, "USER=") > 1 || strings.Count(rest, "COMMAND=") > 1 {
		// PWD and COMMAND are the user's to choose and may hold "; USER=":
		// which USER= sudo wrote cannot be told from the line.
		ev.Set("parse_warning", "sudo line with several USER= or COMMAND=: target user and command may be forged")
	}
	if failure != "" {
		ev.Outcome = "failure"
		ev.Set("reason", failure)
	}
	setUser(ev, user)
	ev.Set(event.FieldTargetUser, target)
	ev.Set(event.FieldCommandLine, command)
	return true
}

func isUpperWord(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

// su (util-linux and shadow): "(to root) alice on pts/0", "FAILED SU (to
// root) alice on pts/0", "pam_unix(su:auth): authentication failure; ...",
// "pam_unix(su:session): session opened for user root(uid=0) by alice(uid=1000)".
func normalizeSu(ev *event.Event, msg string) bool {
	ev.Category = "authentication"
	switch {
	case strings.HasPrefix(msg, "(to ") || strings.HasPrefix(msg, "FAILED SU (to ") || strings.HasPrefix(msg, "+ ") || strings.HasPrefix(msg, "- "):
		// shadow's su also writes "+ pts/0 alice:root" / "- pts/0 alice:root".
		ev.Action = "su"
		ev.Outcome = "success"
		if strings.HasPrefix(msg, "FAILED") || strings.HasPrefix(msg, "- ") {
			ev.Outcome = "failure"
		}
		if i := strings.Index(msg, "(to "); i >= 0 {
			target, rest, _ := strings.Cut(msg[i+len("(to "):], ") ")
			user, _, _ := strings.Cut(rest, " on ")
			ev.Set(event.FieldTargetUser, target)
			setUser(ev, user)
		} else if f := strings.Fields(msg); len(f) == 3 {
			user, target, _ := strings.Cut(f[2], ":")
			setUser(ev, user)
			ev.Set(event.FieldTargetUser, target)
		}
		return true
	case strings.HasPrefix(msg, "pam_unix(su:auth): authentication failure"), strings.HasPrefix(msg, "pam_unix(su-l:auth): authentication failure"):
		ev.Action, ev.Outcome = "pam_auth", "failure"
		setUser(ev, pamField(msg, "ruser"))
		ev.Set(event.FieldTargetUser, pamField(msg, "user"))
		return true
	case strings.Contains(msg, "): session opened for user "):
		ev.Action, ev.Outcome = "session_opened", "success"
		rest := msg[strings.Index(msg, "session opened for user ")+len("session opened for user "):]
		target, by, _ := strings.Cut(rest, " by ")
		ev.Set(event.FieldTargetUser, stripUID(target))
		setUser(ev, stripUID(by))
		return true
	}
	ev.Category = ""
	return false
}

// stripUID turns "root(uid=0)" into "root".
func stripUID(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "(")
	return s
}

// pamField reads name= from a pam_unix line ("... ruser=alice rhost=  user=bob").
func pamField(msg, name string) string {
	for _, f := range strings.Fields(msg) {
		if v, ok := strings.CutPrefix(f, name+"="); ok {
			return v
		}
	}
	return ""
}

// The shadow utilities: "new user: name=bob, UID=1001, GID=1001, home=/home/bob,
// shell=/bin/bash, from=/dev/pts/0", "new group: name=devs, GID=1002",
// "add 'bob' to group 'sudo'", "add 'bob' to shadow group 'sudo'",
// "delete user 'bob'", "group added to /etc/group: name=devs, GID=1002",
// "pam_unix(passwd:chauthtok): password changed for bob", "password for 'bob'
// changed by 'root'", "change user 'bob' password".
func normalizeShadow(ev *event.Event, msg string) bool {
	set := func(action, target string) bool {
		ev.Category, ev.Action, ev.Outcome = "iam", action, "success"
		ev.Set(event.FieldTargetUser, target)
		return true
	}
	quoted := func(s string, n int) string { // the n-th 'quoted' word
		parts := strings.Split(s, "'")
		if 2*n+1 < len(parts) {
			return parts[2*n+1]
		}
		return ""
	}
	switch {
	case strings.HasPrefix(msg, "new user: "):
		return set("user_created", shadowField(msg, "name"))
	case strings.HasPrefix(msg, "new group: "), strings.HasPrefix(msg, "group added to /etc/group: "):
		ev.Set("group", shadowField(msg, "name"))
		return set("group_created", "")
	case strings.HasPrefix(msg, "add '") && strings.Contains(msg, " group '"):
		ev.Set("group", quoted(msg, 1))
		return set("group_member_added", quoted(msg, 0))
	case strings.HasPrefix(msg, "delete user '"):
		return set("user_deleted", quoted(msg, 0))
	case strings.HasPrefix(msg, "removed group '"), strings.HasPrefix(msg, "group '") && strings.HasSuffix(msg, "' removed"):
		ev.Set("group", quoted(msg, 0))
		return set("group_deleted", "")
	case strings.Contains(msg, "password changed for "):
		return set("password_changed", strings.TrimSpace(msg[strings.Index(msg, "password changed for ")+len("password changed for "):]))
	case strings.HasPrefix(msg, "password for '"):
		setUser(ev, quoted(msg, 1))
		return set("password_changed", quoted(msg, 0))
	case strings.HasPrefix(msg, "change user '") && strings.HasSuffix(msg, "' password"):
		return set("password_changed", quoted(msg, 0))
	}
	return false
}

// shadowField reads "name=value," from a useradd/groupadd line.
func shadowField(msg, name string) string {
	i := strings.Index(msg, name+"=")
	if i < 0 {
		return ""
	}
	v, _, _ := strings.Cut(msg[i+len(name)+1:], ",")
	return strings.TrimSpace(v)
}

// systemd-logind: "New session 12 of user alice.", "Removed session 12.",
// "Session 12 logged out. Waiting for processes to exit."
func normalizeLogind(ev *event.Event, msg string) bool {
	if rest, ok := strings.CutPrefix(msg, "New session "); ok {
		if _, user, ok := strings.Cut(rest, " of user "); ok {
			ev.Category, ev.Action, ev.Outcome = "authentication", "session_opened", "success"
			setUser(ev, strings.TrimSuffix(user, "."))
			return true
		}
	}
	if strings.HasPrefix(msg, "Removed session ") {
		ev.Category, ev.Action = "authentication", "session_closed"
		return true
	}
	return false
}

// The kernel's packet filter log (iptables/nftables LOG, ufw):
// "[UFW BLOCK] IN=eth0 OUT= MAC=... SRC=203.0.113.5 DST=10.0.0.4 LEN=60 ...
// PROTO=TCP SPT=51000 DPT=22 WINDOW=64240 RES=0x00 SYN URGP=0". The log
// prefix before IN= (the rule's --log-prefix) is the rule name; ufw's says
// the verdict.
func normalizePacketFilter(ev *event.Event, msg string) bool {
	i := strings.Index(msg, " IN=") + 1 // the IN= field, not LOGIN= in a prefix
	if strings.HasPrefix(msg, "IN=") {
		i = 0
	}
	if i < 0 || (i == 0 && !strings.HasPrefix(msg, "IN=")) || !strings.Contains(msg[i:], " SRC=") {
		return false
	}
	prefix := strings.TrimSpace(msg[:i])
	// A kernel timestamp may lead: "[12345.678901] [UFW BLOCK] IN=...".
	if strings.HasPrefix(prefix, "[") {
		if j := strings.Index(prefix, "] "); j > 0 && isKernelStamp(prefix[1:j]) {
			prefix = strings.TrimSpace(prefix[j+2:])
		}
	}
	f := map[string]string{}
	for _, kv := range strings.Fields(msg[i:]) {
		if strings.HasPrefix(kv, "[") {
			break // an ICMP error's quoted packet: its sender wrote it
		}
		if k, v, ok := strings.Cut(kv, "="); ok {
			if _, dup := f[k]; !dup {
				f[k] = v
			}
		}
	}
	ev.Category, ev.Action = "network", "flow"
	ev.SrcIP, ev.DstIP = parseIP(f["SRC"]), parseIP(f["DST"])
	ev.SrcPort, ev.DstPort = parsePort(f["SPT"]), parsePort(f["DPT"])
	ev.Protocol = strings.ToLower(f["PROTO"])
	ev.Set(event.FieldRuleName, strings.Trim(prefix, "[] "))
	upper := strings.ToUpper(prefix)
	switch {
	case strings.Contains(upper, "BLOCK"), strings.Contains(upper, "DROP"), strings.Contains(upper, "DENY"), strings.Contains(upper, "REJECT"):
		ev.Action, ev.Outcome = "deny", "failure"
	case strings.Contains(upper, "ALLOW"), strings.Contains(upper, "ACCEPT"):
		ev.Action, ev.Outcome = "allow", "success"
	}
	if in := f["IN"]; in != "" {
		ev.Set("interface_in", in)
	}
	if out := f["OUT"]; out != "" {
		ev.Set("interface_out", out)
	}
	return true
}

func isKernelStamp(s string) bool {
	s = strings.TrimSpace(s)
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && s[i] != '.' {
			return false
		}
	}
	return true
}

// auditd records, read by the key=value parser (type=... msg=audit(time:serial): ...).
// Each record is its own event; the serial is attrs["audit_serial"], on
// which rules can join the records of one event (an EXECVE and its
// SYSCALL).
func normalizeAudit(ev *event.Event) bool {
	a := func(k string) string { return strings.Trim(ev.Attrs["kv."+k], `"'`) }
	typ := a("type")
	// msg=audit(<time>:<serial>): — a USER_* record has a second msg='...'.
	stamp := ev.Message[strings.Index(ev.Message, "msg=audit(")+len("msg=audit("):]
	if stamp, _, ok := strings.Cut(stamp, ")"); ok {
		if _, serial, ok := strings.Cut(stamp, ":"); ok {
			ev.Set("audit_serial", serial)
		}
	}
	ev.Set(event.FieldEventCode, typ)
	ev.Category = "audit"
	outcome := func(res string) {
		switch strings.ToLower(strings.Trim(res, `"'`)) {
		case "success", "yes":
			ev.Outcome = "success"
		case "failed", "no":
			ev.Outcome = "failure"
		}
	}
	switch typ {
	case "EXECVE":
		ev.Category, ev.Action = "process", "process_created"
		var args []string
		for i := 0; i < 64; i++ {
			v, ok := ev.Attrs["kv.a"+strconv.Itoa(i)]
			if !ok {
				break
			}
			args = append(args, auditArg(v))
		}
		ev.Set(event.FieldCommandLine, strings.Join(args, " "))
	case "SYSCALL":
		ev.Action = "syscall"
		ev.Set(event.FieldProcess, a("exe"))
		ev.Set(event.FieldProcessID, a("pid"))
		setUser(ev, auditUser(a("auid")))
		outcome(a("success"))
	case "USER_AUTH", "USER_LOGIN", "USER_START", "USER_END", "USER_ACCT", "CRED_ACQ":
		ev.Category, ev.Action = "authentication", strings.ToLower(typ)
		if typ == "USER_AUTH" || typ == "USER_LOGIN" {
			ev.Action = "logon"
		}
		setUser(ev, a("acct"))
		ev.SrcIP = parseIP(a("addr"))
		ev.Set(event.FieldProcess, a("exe"))
		outcome(a("res"))
	case "ADD_USER", "DEL_USER", "ADD_GROUP", "DEL_GROUP", "USER_CHAUTHTOK", "GRP_MGMT", "USER_MGMT":
		ev.Category = "iam"
		ev.Action = map[string]string{"ADD_USER": "user_created", "DEL_USER": "user_deleted", "ADD_GROUP": "group_created",
			"DEL_GROUP": "group_deleted", "USER_CHAUTHTOK": "password_changed", "GRP_MGMT": "group_changed", "USER_MGMT": "user_changed"}[typ]
		ev.Set(event.FieldTargetUser, firstOf(a("acct"), a("id")))
		setUser(ev, auditUser(a("auid")))
		ev.Set(event.FieldProcess, a("exe"))
		outcome(a("res"))
	default:
		ev.Action = strings.ToLower(typ)
	}
	return true
}

// auditUser drops the unset login uid (4294967295) and "unset".
func auditUser(auid string) string {
	if auid == "4294967295" || auid == "unset" || auid == "-1" {
		return ""
	}
	return auid
}

// auditArg is one EXECVE argument: quoted as is, or hex-encoded (auditd
// encodes an argument holding a space, a quote or a control character).
func auditArg(v string) string {
	if strings.HasPrefix(v, `"`) {
		return strings.Trim(v, `"`)
	}
	if len(v)%2 == 0 && len(v) > 0 {
		if b, err := hex.DecodeString(v); err == nil {
			return strings.ToValidUTF8(string(b), "\uFFFD")
		}
	}
	return v
}

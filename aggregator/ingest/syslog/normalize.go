package syslog

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// normalize fills ev's security fields when it recognizes the message. It
// is pure: it reads App and Message and writes only the normalized fields.
// win is scratch for the Windows fields (nil: one is made).
func normalize(ev *event.Event, keep *attrFilter, win *winFields) {
	parseSnare(ev) // Snare's Windows format: fills win.* for normalizeWindows
	if win == nil {
		win = new(winFields)
	}
	if (len(ev.Attrs) > 0 || len(win.aside) > 0) && normalizeWindows(ev, keep, win) {
		return
	}
	switch ev.App {
	case "sshd", "sshd-session": // OpenSSH 9.8 logs authentication as sshd-session
		l, ok := parseSSHD(ev.Message)
		if !ok {
			return
		}
		ev.Category, ev.Action, ev.Protocol = "authentication", l.action, "ssh"
		ev.Outcome, ev.User, ev.SrcIP, ev.SrcPort = l.outcome, l.user, l.ip, l.port
	default:
		normalizeLinux(ev)
	}
}

// sshLogon is what an sshd line says about one logon attempt.
type sshLogon struct {
	// action tells the kinds of line apart, because one attempt is often
	// logged several times: "Invalid user x" then "Failed password for
	// invalid user x", and pam_unix's own failure line. Only "logon" (the
	// Accepted/Failed line) is one per attempt, so rules count that.
	action  string // "logon", "invalid_user" or "pam_auth"
	outcome string // "success" or "failure"
	user    string
	ip      string // empty when sshd logged a host name (UseDNS) or nothing
	port    int
}

// parseSSHD recognizes OpenSSH's logon lines:
//
//	Accepted <method> for <user> from <addr> port <port> ssh2[: <key>]
//	Failed <method> for [invalid user ]<user> from <addr> port <port> ssh2[: <key>]
//	Invalid user <user> from <addr> port <port>
//	pam_unix(sshd:auth): authentication failure; logname= ... rhost=<addr>  user=<user>
//
// The user name is the client's choice and may contain anything, including
// " from 10.0.0.1 port 22". sshd appends the real address after it, so the
// address is taken after the last " from ", and in the pam_unix line rhost
// (which precedes user) is taken at its first occurrence.
func parseSSHD(msg string) (sshLogon, bool) {
	var l sshLogon
	var rest string
	switch {
	case strings.HasPrefix(msg, "Accepted "):
		l.outcome, rest = "success", msg[len("Accepted "):]
	case strings.HasPrefix(msg, "Failed "):
		l.outcome, rest = "failure", msg[len("Failed "):]
	case strings.HasPrefix(msg, "Invalid user "):
		l, ok := fromAddr("failure", msg[len("Invalid user "):])
		l.action = "invalid_user"
		return l, ok
	case strings.HasPrefix(msg, "pam_unix("):
		l, ok := parsePAMFailure(msg)
		l.action = "pam_auth"
		return l, ok
	default:
		return l, false
	}
	// "<method> for ": one word, e.g. password, publickey,
	// keyboard-interactive/pam, none.
	method, rest, ok := strings.Cut(rest, " for ")
	if !ok || method == "" || strings.IndexByte(method, ' ') >= 0 {
		return l, false
	}
	if l.outcome == "failure" {
		rest = strings.TrimPrefix(rest, "invalid user ")
	}
	l, ok = fromAddr(l.outcome, rest)
	l.action = "logon"
	return l, ok
}

// fromAddr parses "<user> from <addr>[ port <port>[ ...]]".
func fromAddr(outcome, s string) (sshLogon, bool) {
	i := strings.LastIndex(s, " from ")
	if i < 0 {
		return sshLogon{}, false
	}
	l := sshLogon{outcome: outcome, user: s[:i]}
	addr, rest, _ := strings.Cut(s[i+len(" from "):], " ")
	if addr == "" {
		return sshLogon{}, false
	}
	l.ip = parseIP(addr)
	if p, ok := strings.CutPrefix(rest, "port "); ok {
		p, _, _ = strings.Cut(p, " ")
		l.port = parsePort(p)
	}
	return l, true
}

// parsePAMFailure parses pam_unix's
// "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.5  user=root".
// user= is last and absent for an unknown user.
func parsePAMFailure(msg string) (sshLogon, bool) {
	_, kv, ok := strings.Cut(msg, "): authentication failure; ")
	if !ok {
		return sshLogon{}, false
	}
	l := sshLogon{outcome: "failure"}
	kv = " " + kv // every field now starts with a space, so " user=" never matches "ruser="
	if i := strings.Index(kv, " rhost="); i >= 0 {
		kv = kv[i+len(" rhost="):]
		host, _, _ := strings.Cut(kv, " ")
		l.ip = parseIP(host)
	}
	if i := strings.Index(kv, " user="); i >= 0 {
		l.user = strings.TrimSpace(kv[i+len(" user="):])
	}
	return l, true
}

// parseIP returns s in canonical form if it is an IP address (an IPv4
// address mapped into IPv6 is unmapped, so it joins with plain IPv4 from
// other sources), else "".
func parseIP(s string) string {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return ""
	}
	if ip.Is4() {
		return s // ParseAddr takes IPv4 only in its canonical form: no copy needed
	}
	return ip.Unmap().String()
}

func parsePort(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0
	}
	return n
}

package main

import (
	"fmt"
	"net/netip"
	"time"
)

// background appends one benign line of the realistic mix (weights per
// 1,000 lines): sshd publickey logons 300, sshd mistyped passwords 2,
// Windows logons as syslog 198, firewall drops 250, NSG flow tuples as
// syslog 150, Entra sign-ins as syslog 100. Addresses come from the pool;
// mistyped passwords take pool addresses round-robin, so one address fails
// once every ips/0.002 lines: never 5 in 2 minutes or 10 in 30 minutes at
// the default rate, so the background raises no alert.
func (g *generator) background(b []byte, t time.Time) []byte {
	if g.cfg.mix == "formats" && g.rng.IntN(100) < 40 {
		return g.formatLine(b, t)
	}
	host := g.hosts[g.rng.IntN(len(g.hosts))]
	ip := poolIP(g.rng.IntN(g.cfg.ips))
	user := staffUsers[g.rng.IntN(len(staffUsers))]
	port := 1024 + g.rng.IntN(64000)
	switch k := g.rng.IntN(1000); {
	case k < 300:
		b = rfc5424Head(b, t)
		b = fmt.Appendf(b, "%s sshd %d - - Accepted publickey for %s from %s port %d ssh2: ED25519 SHA256:Zm9vYmFyYmF6cXV4", host, 1000+g.rng.IntN(90000), user, ip, port)
	case k < 302:
		ip = poolIP(g.failSeq % g.cfg.ips)
		g.failSeq++
		b = rfc5424Head(b, t)
		b = fmt.Appendf(b, "%s sshd %d - - Failed password for %s from %s port %d ssh2", host, 1000+g.rng.IntN(90000), user, ip, port)
		g.oracle.failure(ip, t)
	case k < 500:
		id := "4624 - An account was successfully logged on."
		if k < 320 {
			id = "4625 - An account failed to log on."
		}
		b = rfc5424Head(b, t)
		b = fmt.Appendf(b, "%s Microsoft-Windows-Security-Auditing - %s Logon Type: 3 Account Name: %s Source Network Address: %s Source Port: %d", host, id, user, ip, port)
	case k < 750:
		b = append(b, "<4>"...)
		b = t.UTC().AppendFormat(b, time.RFC3339)
		b = fmt.Appendf(b, " %s kernel: [UFW BLOCK] IN=eth0 OUT= SRC=%s DST=10.20.0.4 LEN=60 PROTO=TCP SPT=%d DPT=%d", host, ip, port, commonPorts[g.rng.IntN(len(commonPorts))])
	case k < 900:
		b = rfc5424Head(b, t)
		b = fmt.Appendf(b, "nsg-flowlogs azure-nsg - - - rule=UserRule_AllowVnet flow=%d,%s,10.20.0.4,%d,%d,T,I,A,B,12,4980,10,3201", t.Unix(), ip, port, commonPorts[g.rng.IntN(len(commonPorts))])
	default:
		b = rfc5424Head(b, t)
		b = fmt.Appendf(b, "entra-export azure-signin - - - userPrincipalName=%s@contoso.example resultType=0 ipAddress=%s location=NL appDisplayName=\"Office 365 Exchange Online\"", user, ip)
	}
	return b
}

var commonPorts = []int{22, 53, 80, 123, 443, 445, 3389, 5432, 8080, 8443}

// plant places the attacks of the realistic mix at fractions of the event
// span T = n/rate. Each planted line replaces the background line at its
// index (or the next free one). See bench/README.md for the table.
func (g *generator) plant() {
	T := time.Duration(float64(g.cfg.n) / g.cfg.rate * float64(time.Second))
	frac := func(f float64) time.Duration { return time.Duration(f * float64(T)) }
	victim := g.hosts[0]

	// A: SSH brute force, then a root logon from the same address.
	a := frac(0.20)
	var lines []timed
	names := []string{"root", "admin", "root", "oracle", "ubuntu", "root", "test", "root", "admin", "postgres", "root", "git"}
	for i, u := range names {
		lines = append(lines, timed{a + time.Duration(i)*4*time.Second,
			fmt.Sprintf("%s sshd 4242 - - Failed password for %s from 203.0.113.66 port %d ssh2", victim, u, 40000+i*7), addr("203.0.113.66")})
	}
	lines = append(lines, timed{a + 52*time.Second, victim + " sshd 4242 - - Accepted password for root from 203.0.113.66 port 40099 ssh2", netip.Addr{}})
	g.add(plan{what: "SSH brute force from 203.0.113.66 (12 failed passwords in 44s) then Accepted password for root",
		at: a, alerts: "ssh-brute-force=1 brute-force-then-success=1 ssh-root-logon=1"}, lines)

	// B: password spray: 15 accounts, one try each, 40s apart (never 5 in 2m).
	b := frac(0.40)
	lines = nil
	for i := 0; i < 15; i++ {
		lines = append(lines, timed{b + time.Duration(i)*40*time.Second,
			fmt.Sprintf("%s sshd 5151 - - Failed password for invalid user user%02d from 198.51.100.23 port %d ssh2", g.hosts[1], i, 41000+i), addr("198.51.100.23")})
	}
	g.add(plan{what: "SSH password spray from 198.51.100.23 (15 accounts, 40s apart)", at: b, alerts: "password-spray=1"}, lines)

	// C: RDP brute force in Windows events forwarded as syslog.
	c := frac(0.50)
	lines = nil
	for i := 0; i < 30; i++ {
		lines = append(lines, timed{c + time.Duration(i)*2*time.Second,
			fmt.Sprintf("%s Microsoft-Windows-Security-Auditing - 4625 - An account failed to log on. Logon Type: 10 Account Name: administrator Source Network Address: 203.0.113.77 Source Port: %d", g.hosts[2], 50000+i), netip.Addr{}})
	}
	lines = append(lines, timed{c + 61*time.Second, g.hosts[2] + " Microsoft-Windows-Security-Auditing - 4624 - An account was successfully logged on. Logon Type: 10 Account Name: administrator Source Network Address: 203.0.113.77 Source Port: 50099", netip.Addr{}})
	g.add(plan{what: "RDP brute force as Windows 4625/4624 syslog from 203.0.113.77", at: c,
		alerts: "none (the syslog source normalizes only sshd; Windows events as syslog are not logons to the pack)"}, lines)

	// D: port scan in NSG flow tuples sent as syslog.
	d := frac(0.60)
	lines = nil
	for i := 0; i < 40; i++ {
		lines = append(lines, timed{d + time.Duration(i)*time.Second,
			fmt.Sprintf("nsg-flowlogs azure-nsg - - - rule=DefaultRule_DenyAllInBound flow=0,203.0.113.99,10.20.0.4,61000,%d,T,I,D,B,,,,", 1000+i*37), netip.Addr{}})
	}
	g.add(plan{what: "port scan of 40 ports from 203.0.113.99 as NSG flow tuples over syslog", at: d,
		alerts: "none (port-scan needs action=flow events, which only the Azure Blob source makes)"}, lines)

	// E: Entra sign-in failures sent as syslog.
	e := frac(0.70)
	lines = nil
	for i := 0; i < 15; i++ {
		lines = append(lines, timed{e + time.Duration(i)*10*time.Second,
			"entra-export azure-signin - - - userPrincipalName=alice@contoso.example resultType=50126 ipAddress=203.0.113.120 location=RU appDisplayName=\"Azure Portal\"", netip.Addr{}})
	}
	g.add(plan{what: "15 Entra sign-in failures from 203.0.113.120 as syslog", at: e,
		alerts: "none (entra-signin-failures-one-ip needs source azure.signin, from the Azure Blob source)"}, lines)

	// F: a host that stops sending.
	f := frac(0.05)
	lines = nil
	for at := time.Duration(0); at <= f; at += 10 * time.Second {
		lines = append(lines, timed{at, "legacy-db-01 CRON 777 - - pam_unix(cron:session): session closed for user root", netip.Addr{}})
	}
	want := "log-source-silent=0 (the event span after it is shorter than 30m + 1m lateness)"
	if T-f > 31*time.Minute {
		want = "log-source-silent=1 for host=legacy-db-01"
	}
	g.add(plan{what: "host legacy-db-01 goes silent", at: f, alerts: want}, lines)
}

type timed struct {
	at      time.Duration
	msg     string
	failure netip.Addr
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// add places the lines of p at the line index matching their event time.
func (g *generator) add(p plan, lines []timed) {
	p.placed = true
	for _, l := range lines {
		i := int(l.at.Seconds() * g.cfg.rate)
		for ; i < g.cfg.n; i++ {
			if _, taken := g.planted[i]; !taken {
				break
			}
		}
		if i >= g.cfg.n {
			p.placed = false
			continue
		}
		g.planted[i] = plantedLine{msg: []byte(l.msg), failure: l.failure}
	}
	g.plans = append(g.plans, p)
}

// formatLine appends one benign line in a structured format (the formats
// mix, per 100 of them): a CEF firewall allow 25, a LEEF flow 10, a
// FortiGate key=value allow 25, a Windows 4624 network logon as NXLog
// structured data 25, a Sysmon process creation as NXLog JSON 15. None is
// part of an attack: the planted ones are the realistic mix's.
func (g *generator) formatLine(b []byte, t time.Time) []byte {
	host := g.hosts[g.rng.IntN(len(g.hosts))]
	ip := poolIP(g.rng.IntN(g.cfg.ips))
	user := staffUsers[g.rng.IntN(len(staffUsers))]
	port := 1024 + g.rng.IntN(64000)
	dport := commonPorts[g.rng.IntN(len(commonPorts))]
	b = rfc5424Head(b, t)
	switch k := g.rng.IntN(100); {
	case k < 25:
		b = fmt.Appendf(b, "fw-edge-01 - - - - CEF:0|Palo Alto Networks|PAN-OS|11.1.0|end|TRAFFIC|3|src=%s spt=%d dst=10.20.1.10 dpt=%d proto=tcp act=allow cs1Label=Rule cs1=allow-web app=ssl in=4980 out=3201", ip, port, dport)
	case k < 35:
		b = fmt.Appendf(b, "qradar-relay - - - - LEEF:1.0|Lancope|StealthWatch|7.4|flow|src=%s\tdst=10.20.0.5\tsrcPort=%d\tdstPort=%d\tproto=TCP\tusrName=%s", ip, port, dport, user)
	case k < 60:
		b = fmt.Appendf(b, "fgt-01 - - - - date=2026-11-23 time=10:00:00 devname=\"FGT-EDGE-01\" logid=\"0000000013\" type=\"traffic\" subtype=\"forward\" srcip=%s srcport=%d dstip=10.20.0.6 dstport=%d proto=6 action=\"accept\" policyname=\"allow-web\" service=\"HTTPS\" sentbyte=1200 rcvdbyte=4800", ip, port, dport)
	case k < 85:
		b = fmt.Appendf(b, "%s Microsoft-Windows-Security-Auditing 612 - [NXLOG@14506 EventID=\"4624\" Channel=\"Security\" TargetUserName=\"%s\" IpAddress=\"%s\" IpPort=\"%d\" LogonType=\"3\"] An account was successfully logged on.", host, user, ip, port)
	default:
		b = fmt.Appendf(b, "%s nxlog - - - {\"EventID\":1,\"SourceName\":\"Microsoft-Windows-Sysmon\",\"Image\":\"C:\\\\Windows\\\\System32\\\\svchost.exe\",\"CommandLine\":\"svchost.exe -k netsvcs\",\"ParentImage\":\"C:\\\\Windows\\\\System32\\\\services.exe\",\"User\":\"NT AUTHORITY\\\\SYSTEM\",\"ProcessId\":\"%d\"}", host, 1000+g.rng.IntN(60000))
	}
	return b
}

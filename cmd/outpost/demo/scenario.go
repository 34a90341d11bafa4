package demo

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"time"
)

// The scenario's addresses are documentation ranges (RFC 5737) and private
// ranges: they appear only inside log text. Every socket the demo opens is
// on 127.0.0.1.
const (
	attackerIP = "203.0.113.66"
	targetHost = "web-01"
)

// transport says how a line is sent.
type transport int

const (
	viaUDP transport = iota
	viaTCPOctet
	viaTCPLF
)

// hostVia is how each host sends, as a host's rsyslog would: one transport,
// one connection, its lines in order. (Lines of one host spread over
// several connections could overtake each other by more than the allowed
// lateness when the machine is busy.)
var hostVia = map[string]transport{"web-01": viaTCPOctet, "web-02": viaTCPLF, "db-01": viaUDP, "jump-01": viaTCPLF}

type line struct {
	at  time.Time
	via transport
	msg string
}

// scenario builds the replay: `noise` benign lines over ten minutes before
// base, with an SSH brute force from one address hidden in the middle of
// them (12 failed passwords within a minute for root and a few usual
// names), followed by a successful password logon as root from the same
// address. It is seeded, so every run sends the same lines.
func scenario(base time.Time, noise int) []line {
	rng := rand.New(rand.NewPCG(7, 42))
	start := base.Add(-10 * time.Minute)
	var out []line
	users := []string{"alice", "bob", "deploy", "svc-backup"}
	hosts := []string{"web-01", "web-02", "db-01", "jump-01"}
	for i := 0; i < noise; i++ {
		at := start.Add(time.Duration(rng.Int64N(int64(10 * time.Minute))))
		host := hosts[rng.IntN(len(hosts))]
		internal := fmt.Sprintf("10.20.%d.%d", rng.IntN(4), 10+rng.IntN(200))
		var msg string
		switch k := rng.IntN(100); {
		case k < 30:
			msg = rfc3164(at, 30, host, "nginx", 0, fmt.Sprintf(`%s - - "GET /api/v1/items/%d HTTP/1.1" 200 %d "-" "Mozilla/5.0"`, internal, rng.IntN(9999), 200+rng.IntN(5000)))
		case k < 50:
			msg = rfc5424(at, 86, host, "CRON", rng.IntN(90000)+1000, "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)")
		case k < 65:
			msg = rfc3164(at, 4, host, "kernel", 0, fmt.Sprintf("[UFW BLOCK] IN=eth0 OUT= SRC=%s DST=10.20.0.4 PROTO=TCP SPT=%d DPT=23", internal, 1024+rng.IntN(60000)))
		case k < 80:
			msg = rfc5424(at, 30, host, "systemd", 1, fmt.Sprintf("Started session-%d.scope - Session %d of User %s.", rng.IntN(900), rng.IntN(900), users[rng.IntN(len(users))]))
		case k < 95:
			msg = rfc5424(at, 38, host, "sshd", rng.IntN(90000)+1000, fmt.Sprintf("Accepted publickey for %s from %s port %d ssh2: ED25519 SHA256:Zm9vYmFy", users[rng.IntN(len(users))], internal, 1024+rng.IntN(60000)))
		default:
			// The odd mistyped password from inside: never five in two minutes.
			msg = rfc3164(at, 38, host, "sshd", rng.IntN(90000)+1000, fmt.Sprintf("Failed password for %s from %s port %d ssh2", users[rng.IntN(len(users))], internal, 1024+rng.IntN(60000)))
		}
		out = append(out, line{at: at, via: hostVia[host], msg: msg})
	}
	attackStart := start.Add(5 * time.Minute)
	names := []string{"root", "admin", "root", "oracle", "ubuntu", "root", "test", "root", "admin", "postgres", "root", "git"}
	for i, u := range names {
		at := attackStart.Add(time.Duration(i) * 4 * time.Second)
		msg := fmt.Sprintf("Failed password for %s from %s port %d ssh2", u, attackerIP, 40000+i*7)
		if u != "root" {
			msg = fmt.Sprintf("Failed password for invalid user %s from %s port %d ssh2", u, attackerIP, 40000+i*7)
		}
		out = append(out, line{at: at, via: hostVia[targetHost], msg: rfc5424(at, 38, targetHost, "sshd", 4242, msg)})
	}
	at := attackStart.Add(52 * time.Second)
	out = append(out, line{at: at, via: hostVia[targetHost], msg: rfc3164(at, 38, targetHost, "sshd", 4242,
		fmt.Sprintf("Accepted password for root from %s port 40099 ssh2", attackerIP))})
	sort.SliceStable(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out
}

func rfc5424(at time.Time, pri int, host, app string, pid int, msg string) string {
	return fmt.Sprintf("<%d>1 %s %s %s %d - - %s", pri, at.UTC().Format("2006-01-02T15:04:05.000Z07:00"), host, app, pid, msg)
}

// rfc3164 writes the BSD form with an RFC 3339 timestamp, as rsyslog
// forwards it; the classic "Mmm dd hh:mm:ss" form would lose the year and
// the zone.
func rfc3164(at time.Time, pri int, host, app string, pid int, msg string) string {
	tag := app
	if pid > 0 {
		tag = fmt.Sprintf("%s[%d]", app, pid)
	}
	return fmt.Sprintf("<%d>%s %s %s: %s", pri, at.UTC().Format(time.RFC3339), host, tag, msg)
}

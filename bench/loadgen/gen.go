package main

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"sort"
	"strconv"
	"time"
)

type config struct {
	n, ips int
	seed   uint64
	mix    string
	rate   float64 // lines per simulated second
	start  time.Time
	expect bool // replay ssh-brute-force over the lines, for report
}

func (c config) validate() error {
	switch {
	case c.n < 1 || c.n > 100_000_000:
		return fmt.Errorf("-n: want 1..100000000, got %d", c.n)
	case c.ips < 1 || c.ips > 1<<24-2:
		return fmt.Errorf("-ips: want 1..%d, got %d", 1<<24-2, c.ips)
	case c.mix != "sshd" && c.mix != "realistic" && c.mix != "formats":
		return fmt.Errorf("-mix: want sshd, realistic or formats, got %q", c.mix)
	case c.rate <= 0:
		return errors.New("-rate: must be positive")
	}
	return nil
}

// poolIP is background address k (0-based): 10.0.0.1 + k, so 1,000
// addresses are 10.0.0.1-10.0.3.232 and 100,000 are 10.0.0.1-10.1.134.160.
func poolIP(k int) netip.Addr {
	v := uint32(10<<24) + 1 + uint32(k)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

var (
	attackUsers = []string{"root", "admin", "oracle", "ubuntu", "test", "postgres", "git", "deploy"} // 8: never a spray
	staffUsers  = []string{"alice", "bob", "deploy", "svc-backup"}
)

type generator struct {
	cfg     config
	rng     *rand.Rand
	hosts   []string
	planted map[int]plantedLine // line index -> message replacing the background line
	plans   []plan
	oracle  bruteForceOracle
	failSeq int // background failures so far (realistic mix), for round-robin addresses
}

// plantedLine is the part of a planted message after the timestamp
// ("host app pid - - text"), and the source address if it is an sshd
// failed password, for the oracle.
type plantedLine struct {
	msg     []byte
	failure netip.Addr
}

// plan is one attack planted in the realistic mix, for the -expect report.
type plan struct {
	what   string
	at     time.Duration // event time after -start
	alerts string        // what the shipped pack must raise
	placed bool
}

func newGenerator(cfg config) *generator {
	g := &generator{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.seed, 0x5eed)), planted: map[int]plantedLine{}}
	for i := 1; i <= 20; i++ {
		g.hosts = append(g.hosts, fmt.Sprintf("vm-app-eastus2-%03d", i))
	}
	if cfg.expect {
		// Off otherwise: it holds every address's recent failures, which
		// is most of loadgen's memory in a long -pace run with many -ips.
		g.oracle.last = map[netip.Addr]*ipWindow{}
	}
	if cfg.mix == "realistic" || cfg.mix == "formats" {
		g.plant()
	}
	return g
}

// at is the event time of line i: event time advances cfg.rate lines per second.
func (g *generator) at(i int) time.Time {
	return g.cfg.start.Add(time.Duration(float64(i) / g.cfg.rate * float64(time.Second)))
}

// all builds every message, framed for TCP (octet counting) or one per line.
func (g *generator) all(octet bool) ([]byte, error) {
	buf := make([]byte, 0, g.cfg.n*160)
	msg := make([]byte, 0, 512)
	for i := 0; i < g.cfg.n; i++ {
		msg = g.line(msg[:0], i)
		buf = frame(buf, msg, octet)
	}
	return buf, nil
}

// line appends message i, unframed. Lines must be asked for in order
// 0, 1, 2, ...: each draws from the one seeded generator.
func (g *generator) line(b []byte, i int) []byte {
	t := g.at(i)
	if p, ok := g.planted[i]; ok {
		b = append(rfc5424Head(b, t), p.msg...)
		if p.failure.IsValid() {
			g.oracle.failure(p.failure, t)
		}
		return b
	}
	if g.cfg.mix == "sshd" {
		return g.sshdFailure(b, t, poolIP(g.rng.IntN(g.cfg.ips)))
	}
	return g.background(b, t)
}

// rfc5424Head starts a message whose PRI, host, app and rest are filled in
// by the planted text: "<38>1 TIMESTAMP " then the plan's "host app pid - - msg".
func rfc5424Head(b []byte, t time.Time) []byte {
	b = append(b, "<38>1 "...)
	b = t.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z07:00")
	return append(b, ' ')
}

// sshdFailure is the SEC-comparable line (~140 bytes):
// <38>1 2026-11-23T00:00:00.001000Z vm-app-eastus2-007 sshd 48213 - - Failed password for invalid user oracle from 10.0.3.17 port 51234 ssh2
func (g *generator) sshdFailure(b []byte, t time.Time, ip netip.Addr) []byte {
	user := attackUsers[g.rng.IntN(len(attackUsers))]
	b = rfc5424Head(b, t)
	b = append(b, g.hosts[g.rng.IntN(len(g.hosts))]...)
	b = append(b, " sshd "...)
	b = strconv.AppendInt(b, int64(1000+g.rng.IntN(90000)), 10)
	b = append(b, " - - Failed password for "...)
	if user != "root" {
		b = append(b, "invalid user "...)
	}
	b = append(b, user...)
	b = append(b, " from "...)
	b = ip.AppendTo(b)
	b = append(b, " port "...)
	b = strconv.AppendInt(b, int64(1024+g.rng.IntN(64000)), 10)
	b = append(b, " ssh2"...)
	g.oracle.failure(ip, t)
	return b
}

// bruteForceOracle replays ssh-brute-force (rules/pack/ssh.yaml: 5 failures
// per src_ip within 2m, suppress 30m) in event time, as aggregator/window
// does for in-order events: a window that fires spends its events, and a
// new one fires unless its first event is within suppress of the last alert.
type bruteForceOracle struct {
	last   map[netip.Addr]*ipWindow
	alerts int
}

type ipWindow struct {
	times     []time.Time
	lastAlert time.Time
}

func (o *bruteForceOracle) failure(ip netip.Addr, t time.Time) {
	if o.last == nil {
		return // not asked for (-expect)
	}
	w := o.last[ip]
	if w == nil {
		w = &ipWindow{}
		o.last[ip] = w
	}
	keep := w.times[:0]
	for _, x := range w.times {
		if t.Sub(x) <= 2*time.Minute {
			keep = append(keep, x)
		}
	}
	w.times = append(keep, t)
	if len(w.times) < 5 {
		return
	}
	first := w.times[0]
	w.times = w.times[:0]
	if !w.lastAlert.IsZero() && first.Sub(w.lastAlert) < 30*time.Minute {
		return
	}
	w.lastAlert = t
	o.alerts++
}

// report prints what the shipped pack must raise on the first sent lines
// (all n, except when -pace stopped early at -duration).
func (g *generator) report(w io.Writer, sent int) {
	span := time.Duration(float64(g.cfg.n) / g.cfg.rate * float64(time.Second))
	fmt.Fprintf(w, "loadgen: mix=%s n=%d ips=%d seed=%d rate=%g event_span=%s start=%s\n",
		g.cfg.mix, g.cfg.n, g.cfg.ips, g.cfg.seed, g.cfg.rate, span, g.cfg.start.Format(time.RFC3339))
	if sent < g.cfg.n {
		fmt.Fprintf(w, "loadgen: stopped after %d of %d lines (event time +%s); the counts below are for the lines sent\n",
			sent, g.cfg.n, time.Duration(float64(sent)/g.cfg.rate*float64(time.Second)).Round(time.Second))
	}
	fmt.Fprintf(w, "loadgen: expect ssh-brute-force=%d (event-time replay of the rule over these lines)\n", g.oracle.alerts)
	sort.Slice(g.plans, func(i, j int) bool { return g.plans[i].at < g.plans[j].at })
	for _, p := range g.plans {
		state := "planted"
		switch {
		case !p.placed:
			state = "NOT planted (run too short)"
		case int(p.at.Seconds()*g.cfg.rate) >= sent:
			state = "NOT sent (stopped before it)"
		}
		fmt.Fprintf(w, "loadgen: %s at +%s: %s; expect %s\n", state, p.at.Round(time.Second), p.what, p.alerts)
	}
}

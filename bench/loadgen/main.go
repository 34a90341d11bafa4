// Command loadgen writes or sends a seeded, bounded stream of syslog lines
// for the side-by-side benchmarks in bench/ (see bench/README.md).
//
//	loadgen -n 1000000 -ips 1000 -mix sshd -out lines.txt     # one message per line, for SEC
//	loadgen -n 1000000 -ips 1000 -mix sshd -tcp 127.0.0.1:5514  # RFC 6587 octet-counted, one connection
//
//	loadgen -pace 30000 -duration 60s -mix sshd -tcp 127.0.0.1:5514  # 30,000 lines per wall second, for 60 s
//
// The same flags give the same lines byte for byte. Every line is built
// before the connection is opened, so the figure it prints is the rate of
// sending, not of generating. With -pace the lines are instead built as
// they are sent, in a burst every 10 ms, so a long run needs no memory for
// them (see pace.go). It connects only to 127.0.0.1; the addresses inside
// the messages are 10.0.0.0/8 and the RFC 5737 documentation ranges.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	cfg := config{}
	flag.IntVar(&cfg.n, "n", 1_000_000, "lines to generate (with -pace and -duration but no -n: pace × duration)")
	flag.IntVar(&cfg.ips, "ips", 1000, "distinct background source addresses (10.0.0.1 upwards, see README)")
	flag.Uint64Var(&cfg.seed, "seed", 1, "random seed")
	flag.StringVar(&cfg.mix, "mix", "sshd", "sshd (only sshd failed passwords), realistic (mixed sources with planted attacks) or formats (realistic with 40% of the background as CEF, LEEF, key=value, Windows and Sysmon events)")
	flag.Float64Var(&cfg.rate, "rate", 1000, "lines per simulated second: how fast event time advances")
	start := flag.String("start", "2026-11-23T00:00:00Z", "event time of the first line (RFC 3339)")
	out := flag.String("out", "", "write the messages to this file, one per line")
	tcp := flag.String("tcp", "", "send the messages over one TCP connection to 127.0.0.1:PORT")
	framing := flag.String("framing", "octet", "tcp framing: octet (RFC 6587 octet counting) or lf")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up sending after this long (with -pace and no -timeout: the planned send time + 5m)")
	flag.BoolVar(&cfg.expect, "expect", false, "print the alerts the shipped pack must raise on these lines")
	pace := flag.Float64("pace", 0, "with -tcp: send this many lines per wall-clock second, generating them on the fly, until -n lines or -duration (independent of -rate)")
	duration := flag.Duration("duration", 0, "with -pace: stop sending after this long")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var err error
	if cfg.start, err = time.Parse(time.RFC3339, *start); err != nil {
		fail("-start: %v", err)
	}
	if *pace < 0 || *duration < 0 {
		fail("-pace and -duration must not be negative")
	}
	if *pace > 0 {
		if !set["n"] && !set["duration"] {
			fail("-pace: give -n LINES and/or -duration D (it stops at whichever comes first)")
		}
		if !set["n"] {
			cfg.n = int(math.Ceil(*pace * duration.Seconds()))
		}
	} else if set["duration"] {
		fail("-duration needs -pace")
	}
	if err := cfg.validate(); err != nil {
		fail("%v", err)
	}
	if (*out == "") == (*tcp == "") {
		fail("give exactly one of -out FILE or -tcp 127.0.0.1:PORT")
	}
	if *pace > 0 && *tcp == "" {
		fail("-pace needs -tcp 127.0.0.1:PORT")
	}
	if *framing != "octet" && *framing != "lf" {
		fail("-framing: want octet or lf, got %q", *framing)
	}

	g := newGenerator(cfg)
	framed := *tcp != "" && *framing == "octet"
	if *pace > 0 {
		p := pacer{pace: *pace, limit: cfg.n, duration: *duration, octet: framed, timeout: *timeout}
		if !set["timeout"] {
			p.timeout = p.planned() + 5*time.Minute
		}
		r, err := p.send(*tcp, g)
		if cfg.expect {
			g.report(os.Stderr, r.lines)
		}
		if err != nil {
			fail("%v", err)
		}
		fmt.Println(r)
		return
	}
	buf, err := g.all(framed)
	if err != nil {
		fail("%v", err)
	}
	if cfg.expect {
		g.report(os.Stderr, cfg.n)
	}
	if *out != "" {
		if err := os.WriteFile(*out, buf, 0o644); err != nil {
			fail("writing %s: %v", *out, err)
		}
		fmt.Fprintf(os.Stderr, "loadgen: wrote lines=%d bytes=%d file=%s\n", cfg.n, len(buf), *out)
		return
	}
	conn, began, err := dial(*tcp, *timeout)
	if err != nil {
		fail("%v", err)
	}
	secs, err := send(conn, began, buf)
	if err != nil {
		fail("%v", err)
	}
	// began (unix seconds) lets a script time the receiver from the first
	// byte rather than from the start of loadgen, which first builds the lines.
	fmt.Printf("loadgen: lines=%d bytes=%d seconds=%.3f lines_per_s=%.0f began=%.6f\n",
		cfg.n, len(buf), secs, float64(cfg.n)/secs, float64(began.UnixNano())/1e9)
}

// dial opens the one TCP connection to addr, which must be on 127.0.0.1,
// with every write due within timeout; it returns when it began dialling.
func dial(addr string, timeout time.Duration) (*net.TCPConn, time.Time, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" {
		return nil, time.Time{}, fmt.Errorf("-tcp: want 127.0.0.1:PORT, got %q", addr)
	}
	begin := time.Now()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, begin, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	if err := conn.SetDeadline(begin.Add(timeout)); err != nil {
		conn.Close()
		return nil, begin, err
	}
	return conn.(*net.TCPConn), begin, nil
}

// send writes buf over conn, closes it and returns the seconds from began
// (the dial) to the close.
func send(conn *net.TCPConn, began time.Time, buf []byte) (float64, error) {
	defer conn.Close()
	w := bufio.NewWriterSize(conn, 256<<10)
	if _, err := w.Write(buf); err != nil {
		return 0, fmt.Errorf("sending to %s: %w", conn.RemoteAddr(), err)
	}
	if err := w.Flush(); err != nil {
		return 0, fmt.Errorf("sending to %s: %w", conn.RemoteAddr(), err)
	}
	if err := conn.CloseWrite(); err != nil {
		return 0, fmt.Errorf("closing %s: %w", conn.RemoteAddr(), err)
	}
	return time.Since(began).Seconds(), nil
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadgen: "+format+"\n", args...)
	os.Exit(2)
}

// frame appends msg to buf, octet-counted (RFC 6587) or LF-terminated.
func frame(buf []byte, msg []byte, octet bool) []byte {
	if octet {
		buf = strconv.AppendInt(buf, int64(len(msg)), 10)
		buf = append(buf, ' ')
		return append(buf, msg...)
	}
	buf = append(buf, msg...)
	return append(buf, '\n')
}

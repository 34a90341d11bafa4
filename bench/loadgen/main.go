// Command loadgen writes or sends a seeded, bounded stream of syslog lines
// for the side-by-side benchmarks in bench/ (see bench/README.md).
//
//	loadgen -n 1000000 -ips 1000 -mix sshd -out lines.txt     # one message per line, for SEC
//	loadgen -n 1000000 -ips 1000 -mix sshd -tcp 127.0.0.1:5514  # RFC 6587 octet-counted, one connection
//
// The same flags give the same lines byte for byte. Every line is built
// before the connection is opened, so the figure it prints is the rate of
// sending, not of generating. It connects only to 127.0.0.1; the addresses
// inside the messages are 10.0.0.0/8 and the RFC 5737 documentation ranges.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	cfg := config{}
	flag.IntVar(&cfg.n, "n", 1_000_000, "lines to generate")
	flag.IntVar(&cfg.ips, "ips", 1000, "distinct background source addresses (10.0.0.1 upwards, see README)")
	flag.Uint64Var(&cfg.seed, "seed", 1, "random seed")
	flag.StringVar(&cfg.mix, "mix", "sshd", "sshd (only sshd failed passwords) or realistic (mixed sources with planted attacks)")
	flag.Float64Var(&cfg.rate, "rate", 1000, "lines per simulated second: how fast event time advances")
	start := flag.String("start", "2026-11-23T00:00:00Z", "event time of the first line (RFC 3339)")
	out := flag.String("out", "", "write the messages to this file, one per line")
	tcp := flag.String("tcp", "", "send the messages over one TCP connection to 127.0.0.1:PORT")
	framing := flag.String("framing", "octet", "tcp framing: octet (RFC 6587 octet counting) or lf")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up sending after this long")
	expect := flag.Bool("expect", false, "print the alerts the shipped pack must raise on these lines")
	flag.Parse()

	var err error
	if cfg.start, err = time.Parse(time.RFC3339, *start); err != nil {
		fail("-start: %v", err)
	}
	if err := cfg.validate(); err != nil {
		fail("%v", err)
	}
	if (*out == "") == (*tcp == "") {
		fail("give exactly one of -out FILE or -tcp 127.0.0.1:PORT")
	}
	if *framing != "octet" && *framing != "lf" {
		fail("-framing: want octet or lf, got %q", *framing)
	}

	g := newGenerator(cfg)
	framed := *tcp != "" && *framing == "octet"
	buf, err := g.all(framed)
	if err != nil {
		fail("%v", err)
	}
	if *expect {
		g.report(os.Stderr)
	}
	if *out != "" {
		if err := os.WriteFile(*out, buf, 0o644); err != nil {
			fail("writing %s: %v", *out, err)
		}
		fmt.Fprintf(os.Stderr, "loadgen: wrote lines=%d bytes=%d file=%s\n", cfg.n, len(buf), *out)
		return
	}
	began, secs, err := send(*tcp, buf, *timeout)
	if err != nil {
		fail("%v", err)
	}
	// began (unix seconds) lets a script time the receiver from the first
	// byte rather than from the start of loadgen, which first builds the lines.
	fmt.Printf("loadgen: lines=%d bytes=%d seconds=%.3f lines_per_s=%.0f began=%.6f\n",
		cfg.n, len(buf), secs, float64(cfg.n)/secs, float64(began.UnixNano())/1e9)
}

// send writes buf over one TCP connection to addr, which must be on
// 127.0.0.1, and returns when it dialled and the seconds from dial to close.
func send(addr string, buf []byte, timeout time.Duration) (time.Time, float64, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" {
		return time.Time{}, 0, fmt.Errorf("-tcp: want 127.0.0.1:PORT, got %q", addr)
	}
	begin := time.Now()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return begin, 0, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(begin.Add(timeout)); err != nil {
		return begin, 0, err
	}
	w := bufio.NewWriterSize(conn, 256<<10)
	if _, err := w.Write(buf); err != nil {
		return begin, 0, fmt.Errorf("sending to %s: %w", addr, err)
	}
	if err := w.Flush(); err != nil {
		return begin, 0, fmt.Errorf("sending to %s: %w", addr, err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		return begin, 0, fmt.Errorf("closing %s: %w", addr, err)
	}
	return begin, time.Since(begin).Seconds(), nil
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

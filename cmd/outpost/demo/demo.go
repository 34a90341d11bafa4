// Package demo runs `outpost demo`: the whole pipeline in a temp dir on
// 127.0.0.1, a stand-in SIEM, and a bundled scenario replayed over syslog.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/outpost-siem/outpost/aggregator/ingest/syslog"
	"github.com/outpost-siem/outpost/aggregator/pipeline"
	"github.com/outpost-siem/outpost/forwarder"
	"github.com/outpost-siem/outpost/forwarder/receiver"
)

// Options tune the demo.
type Options struct {
	Version string
	Keep    bool // keep the temp dir
	Noise   int  // benign lines
	Logger  *slog.Logger
	// Timeout bounds the wait for the alerts; default 60s.
	Timeout time.Duration
	// Serve, if set, is a loopback address for the status page: the demo
	// then keeps running after its report until ctx ends (Ctrl-C).
	Serve string
}

// expectedAlerts is what the scenario should raise with the shipped pack:
// the SSH brute force (threshold), the root logon (match) and the brute
// force followed by a success from the same address (sequence).
const expectedAlerts = 3

// Run runs the demo and writes its report to w.
func Run(ctx context.Context, w io.Writer, o Options) error {
	if o.Noise < 0 {
		return errors.New("noise must not be negative")
	}
	if o.Timeout == 0 {
		o.Timeout = 60 * time.Second
	}
	dir, err := os.MkdirTemp("", "outpost-demo-")
	if err != nil {
		return err
	}
	if !o.Keep {
		defer os.RemoveAll(dir)
	}
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("starting the stand-in SIEM: %w", err)
	}
	defer siem.Close()

	cfg := &pipeline.Config{DataDir: dir}
	cfg.HTTP.Listen = "off"
	if o.Serve != "" {
		cfg.HTTP.Listen = o.Serve
	}
	cfg.Ingest.Syslog = syslog.Config{UDP: []string{"127.0.0.1:0"}, TCP: []string{"127.0.0.1:0"}}
	cfg.Forwarder = forwarder.Config{Hostname: "outpost-demo", Destinations: []forwarder.Destination{{Address: siem.Addr().String()}}}
	if err := cfg.Validate(); err != nil {
		return err
	}
	p, err := pipeline.Open(ctx, cfg, o.Version, o.Logger)
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	defer func() { stop(); <-done }()

	udp, tcp := p.SyslogAddrs()
	fmt.Fprintf(w, "Outpost demo: embedded NATS + JetStream, Badger state and %d shipped rules in %s\n", len(p.Rules().Rules), dir)
	fmt.Fprintf(w, "  syslog in    udp %s, tcp %s\n  SIEM stand-in tcp %s\n\n", udp[0], tcp[0], siem.Addr())

	lines := scenario(time.Now().Truncate(time.Second), o.Noise)
	fmt.Fprintf(w, "Replaying %d syslog lines (UDP, TCP LF-framed, TCP octet-counted): benign noise, with an SSH\n", len(lines))
	fmt.Fprintf(w, "brute force from %s hidden in it, then a successful root logon from the same address.\n\n", attackerIP)
	if err := replay(ctx, lines, udp[0].String(), tcp[0].String()); err != nil {
		return err
	}

	wctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	got, err := siem.Wait(wctx, expectedAlerts)
	if err != nil {
		return fmt.Errorf("waiting for %d alerts, got %d: %w", expectedAlerts, len(got), err)
	}
	// Anything beyond the expected alerts would be a false positive; give
	// it a moment to show up rather than hide it.
	time.Sleep(time.Second)
	got = siem.Messages()

	fmt.Fprintf(w, "CEF received by the SIEM stand-in (%d):\n", len(got))
	for _, m := range got {
		fmt.Fprintln(w, "  "+m)
	}
	st := p.Status()
	fmt.Fprintln(w, "\nWhat crossed the link:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  events in\t%s\t%s\n", humanize.Comma(int64(st.EventsIn)), humanize.IBytes(uint64(st.BytesIn)))
	fmt.Fprintf(tw, "  alerts out\t%s\t%s\n", humanize.Comma(int64(st.AlertsOut)), humanize.IBytes(uint64(st.BytesOut)))
	tw.Flush()
	fmt.Fprintf(w, "  reduction   %.0f× fewer bytes to the SIEM\n", st.Ratio)
	if len(got) != expectedAlerts {
		return fmt.Errorf("expected %d alerts, the SIEM stand-in got %d", expectedAlerts, len(got))
	}
	if o.Keep {
		fmt.Fprintf(w, "\nState kept in %s\n", dir)
	}
	if o.Serve != "" {
		fmt.Fprintf(w, "\nThe status page: http://%s/ (Ctrl-C to stop)\n", p.HTTPAddr())
		<-ctx.Done()
	}
	return nil
}

// ExpectedAlerts is how many alerts Send's traffic raises with the shipped
// pack.
const ExpectedAlerts = expectedAlerts

// Send replays the demo's traffic (noise benign lines with the SSH brute
// force and the root logon in them, timed from now) to a running Outpost's
// syslog listeners: the status page's test feeds the pipeline with it.
func Send(ctx context.Context, noise int, udpAddr, tcpAddr string) error {
	return replay(ctx, scenario(time.Now().Truncate(time.Second), noise), udpAddr, tcpAddr)
}

// replay sends every line over its transport, in order. TCP connections
// stay open for the whole replay, as a forwarding rsyslog's would.
func replay(ctx context.Context, lines []line, udpAddr, tcpAddr string) error {
	var d net.Dialer
	udp, err := d.DialContext(ctx, "udp", udpAddr)
	if err != nil {
		return err
	}
	defer udp.Close()
	octet, err := d.DialContext(ctx, "tcp", tcpAddr)
	if err != nil {
		return err
	}
	defer octet.Close()
	lf, err := d.DialContext(ctx, "tcp", tcpAddr)
	if err != nil {
		return err
	}
	defer lf.Close()
	var sb strings.Builder
	for i, l := range lines {
		var err error
		switch l.via {
		case viaUDP:
			_, err = udp.Write([]byte(l.msg))
			if i%64 == 0 {
				// Loopback UDP drops when the reader falls behind; pace it.
				time.Sleep(time.Millisecond)
			}
		case viaTCPOctet:
			sb.Reset()
			fmt.Fprintf(&sb, "%d %s", len(l.msg), l.msg)
			_, err = io.WriteString(octet, sb.String())
		case viaTCPLF:
			_, err = io.WriteString(lf, l.msg+"\n")
		}
		if err != nil {
			return fmt.Errorf("sending line %d: %w", i, err)
		}
	}
	return nil
}

package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/outpost-siem/outpost/aggregator/console"
)

func newStatusCmd() *cobra.Command {
	var addr, tokenFile, caFile string
	var raw, insecure bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the status page's top row: ready or not, what came in, what went out, stale sources, backlogs",
		Long: `status reads /api/console, what the status page shows, from a running
outpost's http.listen address and prints its top row — ready or the problems,
events and bytes received, alerts and bytes sent, bytes in per byte out,
stale sources, the backlog and dead letters — and each destination.

Off loopback the endpoint needs a token (--token-file, a file holding one of
http.token_file's tokens) and speaks https (--addr https://HOST:PORT, with
--ca-file for a private CA).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			base := addr
			if !strings.Contains(base, "://") {
				base = "http://" + base
			}
			client := &http.Client{Timeout: 15 * time.Second}
			if caFile != "" {
				pem, err := os.ReadFile(caFile)
				if err != nil {
					return err
				}
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					return fmt.Errorf("--ca-file %s: no PEM certificate in it", caFile)
				}
				client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
			}
			req, err := http.NewRequestWithContext(cmd.Context(), "GET", base+"/api/console", nil)
			if err != nil {
				return err
			}
			if tokenFile != "" {
				if u, err := url.Parse(base); err == nil && u.Scheme == "http" && !loopbackURLHost(u.Hostname()) && !insecure {
					return fmt.Errorf("refusing to send the token over plain http to %s: use --addr https://… (or --insecure, on a network you trust)", u.Host)
				}
				tok, err := firstToken(tokenFile)
				if err != nil {
					return err
				}
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := client.Do(req)
			if err != nil {
				return fmt.Errorf("asking outpost at %s (is http.listen set?): %w", addr, err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
			if err != nil {
				return err
			}
			switch {
			case resp.StatusCode == http.StatusUnauthorized:
				return fmt.Errorf("outpost at %s wants authentication: --token-file with one of http.token_file's tokens", addr)
			case resp.StatusCode != http.StatusOK:
				return fmt.Errorf("outpost at %s answered %s", addr, resp.Status)
			}
			if raw {
				_, err := cmd.OutOrStdout().Write(body)
				return err
			}
			var s console.Snapshot
			if err := json.Unmarshal(body, &s); err != nil {
				return fmt.Errorf("reading /api/console: %w", err)
			}
			printStatus(cmd.OutOrStdout(), &s)
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:9464", "outpost's http.listen address (https://HOST:PORT over TLS)")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "a file whose first token line authenticates (http.token_file's format)")
	cmd.Flags().StringVar(&caFile, "ca-file", "", "the CA that signed outpost's http.tls certificate, if not a system one")
	cmd.Flags().BoolVar(&raw, "json", false, "print the JSON as served (/api/console)")
	cmd.Flags().BoolVar(&insecure, "insecure", false, "send the token over plain http to an address off loopback")
	return cmd
}

// loopbackURLHost says whether host (from a URL) is loopback.
func loopbackURLHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// firstToken reads the first token of a token file.
func firstToken(file string) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			return t, nil
		}
	}
	return "", fmt.Errorf("%s holds no token", file)
}

// printStatus prints the page's top row, then the destinations.
func printStatus(w io.Writer, s *console.Snapshot) {
	t := s.Top
	if t.Ready {
		fmt.Fprintf(w, "ready  (outpost %s, up %s)\n", s.Version, s.Now.Sub(s.Started).Round(time.Second))
	} else {
		fmt.Fprintf(w, "NOT READY  (outpost %s)\n", s.Version)
		for _, p := range t.Problems {
			fmt.Fprintln(w, "  "+p)
		}
	}
	fmt.Fprintf(w, "in:   %s events, %s\n", humanize.Comma(int64(t.EventsIn)), humanize.IBytes(uint64(t.BytesIn)))
	fmt.Fprintf(w, "out:  %s alerts, %s", humanize.Comma(int64(t.AlertsOut)), humanize.IBytes(t.BytesOut))
	if t.Ratio > 0 {
		fmt.Fprintf(w, " (%.0f× fewer bytes)", t.Ratio)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "stale sources: %d   backlog: %d alerts   dead letters: %s\n\n", t.StaleSources, t.Backlog, humanize.Comma(int64(t.DeadLetters)))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DESTINATION\tTRANSPORT\tADDRESS\tCONNECTED\tALERTS\tBYTES\tBACKLOG\tOLDEST\tFAILOVER\tERRORS")
	for _, d := range s.Destinations {
		oldest := "-"
		if d.Backlog > 0 {
			oldest = (time.Duration(d.OldestAge) * time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%d\t%s\t%d\t%s\t%d\t%.0f\n", d.Name, d.Transport, d.Address, d.Connected,
			d.AlertsOut, humanize.IBytes(d.BytesOut), d.Backlog, oldest, d.Failover, d.Errors)
	}
	_ = tw.Flush()
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/outpost-siem/outpost/aggregator/console"
)

func newStatusCmd() *cobra.Command {
	var api apiClient
	var raw bool
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
			resp, err := api.get(cmd.Context(), "/api/console")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("outpost at %s answered %s", api.addr, resp.Status)
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
	api.flags(cmd, "")
	cmd.Flags().BoolVar(&raw, "json", false, "print the JSON as served (/api/console)")
	return cmd
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

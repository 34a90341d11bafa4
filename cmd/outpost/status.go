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

	"github.com/outpost-siem/outpost/aggregator/pipeline"
)

func newStatusCmd() *cobra.Command {
	var addr string
	var raw bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show what came in, what went to each SIEM destination, the reduction ratio and the backlogs",
		Long: `status reads /status from a running outpost's http.listen address and prints
the link economy: events and bytes received, alerts and bytes sent per
destination, bytes in per byte out, and each destination's backlog (alerts
in ALERTS not yet delivered to it).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client := &http.Client{Timeout: 10 * time.Second}
			resp, err := client.Get("http://" + addr + "/status")
			if err != nil {
				return fmt.Errorf("asking outpost at %s (is http.listen set?): %w", addr, err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("outpost at %s answered %s", addr, resp.Status)
			}
			if raw {
				_, err := cmd.OutOrStdout().Write(body)
				return err
			}
			var s pipeline.Status
			if err := json.Unmarshal(body, &s); err != nil {
				return fmt.Errorf("reading /status: %w", err)
			}
			printStatus(cmd.OutOrStdout(), s)
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:9464", "outpost's http.listen address")
	cmd.Flags().BoolVar(&raw, "json", false, "print the JSON as served")
	return cmd
}

func printStatus(w io.Writer, s pipeline.Status) {
	fmt.Fprintf(w, "in:   %d events, %s\n", int64(s.EventsIn), humanize.IBytes(uint64(s.BytesIn)))
	fmt.Fprintf(w, "out:  %d alerts, %s", s.AlertsOut, humanize.IBytes(s.BytesOut))
	if s.Ratio > 0 {
		fmt.Fprintf(w, " (%.0f bytes in per byte out)", s.Ratio)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DESTINATION\tTRANSPORT\tADDRESS\tCONNECTED\tALERTS\tBYTES\tBACKLOG\tFAILOVER\tSUPPRESSED\tOVERFLOW")
	for _, d := range s.Destinations {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%d\t%s\t%d\t%d\t%d\t%d\n", d.Name, d.Transport, d.Address, d.Connected,
			d.AlertsOut, humanize.IBytes(d.BytesOut), d.Backlog, d.Failover, d.Suppress, d.Overflow)
	}
	_ = tw.Flush()
}

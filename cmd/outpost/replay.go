package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
)

// replaySender is the Event.Sender of replayed lines.
const replaySender = "replay"

// replayChunkSize is how much input one worker takes at a time: about 1,900
// sshd lines, so handing chunks between goroutines costs nothing per line,
// and the few chunks in flight (with their events, about 1 MiB each) stay
// a small part of the heap.
const replayChunkSize = 256 << 10

// replayGCPercent is the GOGC replay runs with unless GOGC is set.
const replayGCPercent = 400

func newReplayCmd() *cobra.Command {
	var (
		input, inputFormat, format, timezone, received, cpuProfile string
		ruleIDs                                                    []string
		workers                                                    int
		advance                                                    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "replay [DIR] --input FILE",
		Short: "Run the rules over a file of syslog lines (or events) and print the alerts they would have raised",
		Long: `replay reads FILE (- for stdin), one syslog message per line, RFC 5424 or
RFC 3164, parses each line as the syslog source does, and runs the rules
(DIR, default the shipped pack; --rule to pick some) over the events with
the engine the appliance runs (aggregator/engine): the lateness gate and
each rule's condition, then the window logic per rule and group key, in
event time, in file order.
With --input-format events, each line is a normalized event as JSON (the
fields of docs/rules.md: time, source, host, src_ip, ..., attrs), as the
sources publish them: Azure records, or events taken from a dead letter.
An event keeps its own id, received and sender where it has them.
It prints the alerts (--format json: one alert per line, as published to
ALERTS; summary: counts by rule) and ends with a report on stderr:

  replay: lines=N events=N unparsed=N late=N matches=N alerts=N seconds=S lines_per_s=R

A line without a PRI, as in a log file (/var/log/auth.log, rsyslog's file
formats), is read as if sent with <13> (user.notice, what RFC 3164 assumes),
so its timestamp, host and tag are parsed. Event ids are line numbers, so an alert's event_ids name the lines that made
it fire, and replaying a file again gives the same alert ids. Lines the
syslog source would dead-letter (RFC 5424 it cannot parse, over 64KiB) are
unparsed; an event more than 2m (windows.allowed_lateness) behind the newest
event of its host is late and not evaluated. Absence deadlines fire as the
watermark (the newest event time minus 2m) passes them; at the end of the
input it moves on by --advance. Window state stays in memory for the whole
replay: no state TTL, no windows.max_keys_per_rule.

replay runs with GOGC=400 unless GOGC is set: parsing makes garbage fast.`,
		Example: `  outpost rules replay --input /var/log/auth.log --format summary
  outpost rules replay ./rules --input lines.txt --rule ssh-brute-force | jq .key
  zcat syslog.1.gz | outpost rules replay --input - --received 2026-01-01T00:00:00Z`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case inputFormat != "syslog" && inputFormat != "events":
				return fmt.Errorf("--input-format: want syslog or events, got %q", inputFormat)
			case format != "json" && format != "summary":
				return fmt.Errorf("--format: want json or summary, got %q", format)
			case workers < 1:
				return fmt.Errorf("--workers: want at least 1, got %d", workers)
			case advance < 0:
				return fmt.Errorf("--advance: must not be negative, got %s", advance)
			}
			opts := replayOptions{Workers: workers, Advance: advance, Received: time.Now(), Events: inputFormat == "events"}
			var err error
			if opts.Location, err = time.LoadLocation(timezone); err != nil {
				return fmt.Errorf("--timezone: %q is not an IANA time zone: %w", timezone, err)
			}
			if received != "" {
				if opts.Received, err = time.Parse(time.RFC3339, received); err != nil {
					return fmt.Errorf("--received: want an RFC 3339 time: %w", err)
				}
			}
			set, err := loadRuleSet(args)
			if err != nil {
				return err
			}
			rs, err := selectRules(set, ruleIDs)
			if err != nil {
				return err
			}
			in := cmd.InOrStdin()
			if input != "-" {
				f, err := os.Open(input)
				if err != nil {
					return fmt.Errorf("opening input: %w", err)
				}
				defer f.Close()
				in = f
			}
			if os.Getenv("GOGC") == "" {
				// Parsing and conditions allocate about 500 bytes a line
				// that die at once: with GOGC=100 and a live heap of a few
				// MB the collector runs every 30 ms and costs a fifth of
				// the CPU. Heap for speed is the better trade for a batch job.
				defer debug.SetGCPercent(debug.SetGCPercent(replayGCPercent))
			}
			if cpuProfile != "" {
				stop, err := startCPUProfile(cpuProfile)
				if err != nil {
					return err
				}
				defer stop()
			}
			return runReplay(cmd.Context(), in, cmd.OutOrStdout(), cmd.ErrOrStderr(), rs, format, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&input, "input", "", "file of syslog messages, one per line (- for stdin)")
	f.StringVar(&inputFormat, "input-format", "syslog", "syslog (one message per line) or events (one normalized event as JSON per line)")
	f.StringArrayVar(&ruleIDs, "rule", nil, "run only this rule (repeat for more); default every enabled rule")
	f.StringVar(&format, "format", "json", "json (one alert per line) or summary (counts by rule)")
	f.IntVar(&workers, "workers", runtime.GOMAXPROCS(0), "goroutines parsing lines and evaluating conditions, and as many applying the window logic (each to its share of the group keys)")
	f.StringVar(&timezone, "timezone", "UTC", "IANA zone RFC 3164 timestamps are read in (as ingest.syslog.timezone)")
	f.StringVar(&received, "received", "", "reception time given to every line (RFC 3339; default now): the year of RFC 3164 timestamps, the time of lines without one, and the time no watermark passes")
	f.DurationVar(&advance, "advance", 0, "move the watermark this far past the last event at the end (absence rules)")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the replay to this file")
	_ = f.MarkHidden("cpuprofile")
	_ = cmd.MarkFlagRequired("input")
	return cmd
}

func loadRuleSet(args []string) (*rules.Set, error) {
	if len(args) == 0 {
		return rules.Pack()
	}
	return rules.LoadDir(args[0])
}

// selectRules returns the rules named by ids, in the set's order (the order
// the rule filter evaluates them in), or every rule when ids is empty.
func selectRules(set *rules.Set, ids []string) ([]*rules.Rule, error) {
	if len(ids) == 0 {
		return set.Rules, nil
	}
	var unknown []string
	for _, id := range ids {
		if set.Rule(id) == nil {
			unknown = append(unknown, id)
		}
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("--rule: no enabled rule %s in the set", strings.Join(unknown, ", "))
	}
	return set.Only(ids).Rules, nil
}

func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("creating cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// runReplay replays in and writes the alerts (json) or the counts
// (summary) to out and the report to report.
func runReplay(ctx context.Context, in io.Reader, out, report io.Writer, rs []*rules.Rule, format string, opts replayOptions) error {
	start := time.Now()
	bw := bufio.NewWriterSize(out, 64<<10)
	emit := func(*event.Alert) error { return nil }
	if format == "json" {
		emit = func(a *event.Alert) error {
			data, err := json.Marshal(a)
			if err != nil {
				return err
			}
			bw.Write(data)
			return bw.WriteByte('\n')
		}
	}
	st, err := replayLog(ctx, in, rs, opts, emit)
	if err != nil {
		return err
	}
	if format == "summary" {
		writeReplaySummary(bw, rs, st)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing alerts: %w", err)
	}
	secs := time.Since(start).Seconds()
	for i, r := range rs {
		if n := st.Rules[i].EvalErrors; n > 0 {
			fmt.Fprintf(report, "replay: rule %s: condition failed at run time on %d events, treated as no match (first: %v)\n", r.ID, n, st.Rules[i].FirstEvalError)
		}
	}
	fmt.Fprintf(report, "replay: lines=%d events=%d unparsed=%d late=%d matches=%d alerts=%d seconds=%.3f lines_per_s=%.0f\n",
		st.Lines, st.Events, st.Unparsed, st.Late, st.Matches, st.Alerts, secs, float64(st.Lines)/secs)
	return nil
}

func writeReplaySummary(w io.Writer, rs []*rules.Rule, st *replayStats) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tKIND\tMATCHES\tNO_KEY\tSUPPRESSED\tALERTS")
	for i, r := range rs {
		s := st.Rules[i]
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\n", r.ID, r.Kind, s.Matches, s.NoKey, s.Suppressed, s.Alerts)
	}
	tw.Flush()
}

// replayOptions configure replayLog.
type replayOptions struct {
	Workers  int            // parsing goroutines, and window shards; < 1 means 1
	Location *time.Location // zone of RFC 3164 timestamps; nil means UTC
	// Received is every line's reception time: RFC 3164 timestamps take
	// their year from it, lines without a timestamp their time.
	Received time.Time
	// Advance moves the watermark past the last match at the end, so
	// absence deadlines after the input can fire (a test's `advance`).
	Advance time.Duration
	// Events: each line is an event.Event as JSON, not a syslog message.
	Events bool
}

// replayStats counts what a replay saw. Lines = Events + Unparsed + empty
// lines; Late events are among Events.
type replayStats struct {
	Lines, Events, Unparsed, Late, Matches, Alerts int
	Rules                                          []replayRuleStats // per rule, in the order given
}

type replayRuleStats struct {
	Matches, NoKey, Suppressed, Alerts int
	EvalErrors                         int
	FirstEvalError                     error
}

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/rules"
	"github.com/outpost-siem/outpost/rules/ruletest"
)

func newRulesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rules",
		Short: "Check, test and explain rule files",
	}
	var sigmaOpts rules.SigmaOptions
	cmd.PersistentFlags().StringArrayVar(&sigmaOpts.Dirs, "sigma", nil, "a directory of Sigma rules to load too, as rules.sigma (repeatable)")
	cmd.PersistentFlags().StringSliceVar(&sigmaOpts.Status, "sigma-status", nil, "Sigma statuses taken from --sigma dirs (default stable,test)")
	cmd.PersistentFlags().StringVar(&sigmaOpts.MinLevel, "sigma-min-level", "", "the lowest Sigma level taken from --sigma dirs")
	load := func(args []string) (*rules.Set, string, error) {
		name := "the shipped pack"
		dir := ""
		if len(args) > 0 {
			name, dir = args[0], args[0]
		}
		set, err := rules.Load(dir, sigmaOpts)
		return set, name, err
	}
	var strict bool
	lint := &cobra.Command{
		Use:   "lint [DIR]",
		Short: "Load and validate every rule file (default: the shipped pack); print every problem with file:line",
		Long: `lint loads DIR (default: the shipped pack) and every --sigma dir as the
pipeline would, and prints every problem as file:line: rule "id": why. A
problem in DIR fails the load. A Sigma rule of a --sigma dir that Outpost
cannot run is left out: lint prints one line per such rule and a summary,
and exits non-zero for them only with --strict.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, name, err := load(args)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%s: %d rules enabled, %d tests, no problems\n", name, len(set.Rules), len(set.Tests))
			if len(sigmaOpts.Dirs) == 0 {
				return nil
			}
			rejected := printRejected(w, set)
			if strict && rejected > 0 {
				return fmt.Errorf("%d Sigma rules rejected (--strict)", rejected)
			}
			return nil
		},
	}
	lint.Flags().BoolVar(&strict, "strict", false, "exit non-zero when a Sigma rule of a --sigma dir is rejected")
	convert := &cobra.Command{
		Use:   "convert FILE",
		Short: "Print the native rules a Sigma rule file becomes (for review and diff)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			out, err := rules.ConvertSigma(args[0], data, sigmaOpts.Pipelines)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	var verbose bool
	var only string
	test := &cobra.Command{
		Use:   "test [DIR]",
		Short: "Run the test cases in the rule files through the real engine (default: the shipped pack)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, name, err := load(args)
			if err != nil {
				return err
			}
			return runRuleTests(cmd.OutOrStdout(), set, name, only, verbose)
		},
	}
	test.Flags().BoolVarP(&verbose, "verbose", "v", false, "print every test, not only failures")
	test.Flags().StringVar(&only, "run", "", "run only tests whose name contains this")
	var testName, alertID string
	var api apiClient
	explain := &cobra.Command{
		Use:   "explain [DIR] (--test NAME | --alert ID)",
		Short: "Show which events made an alert fire: for a test case's alerts, or for an alert a running outpost raised",
		Long: `With --test, explain runs the test case through the engine and shows each
alert it raises with the events (from the test) that made it fire.

With --alert, it asks a running outpost (http.listen, --addr) for the alert
with that id (CEF externalId) from ALERTS, and shows its evidence: the
group key, the window, the ids of the events that made it fire, a
sequence's steps, a distinct rule's values, the fields it carried. The
events themselves are not kept once the rule filter has evaluated them.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case alertID != "" && testName == "":
				return explainAlert(cmd, &api, alertID)
			case testName != "" && alertID == "":
				set, _, err := load(args)
				if err != nil {
					return err
				}
				return explainTest(cmd.OutOrStdout(), set, testName)
			}
			return errors.New("give one of --test NAME or --alert ID")
		},
	}
	explain.Flags().StringVar(&testName, "test", "", "the test case's name")
	explain.Flags().StringVar(&alertID, "alert", "", "an alert id (CEF externalId)")
	api.flags(explain, " (with --alert)")
	cmd.AddCommand(lint, test, explain, convert)
	cmd.AddCommand(newReplayCmd())
	return cmd
}

func runRuleTests(w io.Writer, set *rules.Set, name, only string, verbose bool) error {
	passed, failed := 0, 0
	covered := map[string]bool{}
	for _, t := range set.Tests {
		if only != "" && !strings.Contains(t.Name, only) {
			continue
		}
		res := ruletest.Run(set, t)
		for _, r := range t.Rules {
			covered[r] = true
		}
		switch {
		case res.Err != nil:
			failed++
			fmt.Fprintf(w, "FAIL %s:%d %s\n  %v\n", t.File, t.Line, t.Name, res.Err)
		case res.Diff != "":
			failed++
			fmt.Fprintf(w, "FAIL %s:%d %s\n%s\n", t.File, t.Line, t.Name, res.Diff)
		default:
			passed++
			if verbose {
				fmt.Fprintf(w, "ok   %s:%d %s (%d alerts)\n", t.File, t.Line, t.Name, len(res.Alerts))
			}
		}
	}
	var untested []string
	for _, r := range set.Rules {
		if !covered[r.ID] {
			untested = append(untested, r.ID)
		}
	}
	sort.Strings(untested)
	fmt.Fprintf(w, "%s: %d passed, %d failed", name, passed, failed)
	if len(untested) > 0 {
		fmt.Fprintf(w, "; rules without tests: %s", strings.Join(untested, ", "))
	}
	fmt.Fprintln(w)
	if failed > 0 {
		return fmt.Errorf("%d rule test(s) failed", failed)
	}
	return nil
}

func explainTest(w io.Writer, set *rules.Set, name string) error {
	for _, t := range set.Tests {
		if t.Name != name {
			continue
		}
		alerts, err := ruletest.Alerts(set, t)
		if err != nil {
			return err
		}
		byID := map[string]*event.Event{}
		for _, ev := range t.Events {
			byID[ev.ID] = ev
		}
		fmt.Fprintf(w, "%s:%d %s: %d alert(s)\n", t.File, t.Line, t.Name, len(alerts))
		for _, a := range alerts {
			fmt.Fprintf(w, "\n%s (%s)\n  %s\n", a.Title, a.ID, ruletest.Describe(a))
			if r := set.Rule(a.RuleID); r != nil && r.Sigma != nil {
				for _, ref := range r.Sigma.References {
					fmt.Fprintf(w, "  reference: %s\n", ref)
				}
				for _, fp := range r.Sigma.FalsePositives {
					fmt.Fprintf(w, "  false positive: %s\n", fp)
				}
			}
			for _, id := range a.EventIDs {
				ev := byID[id]
				if ev == nil {
					continue
				}
				fmt.Fprintf(w, "  event %s at %s: %s\n", id, ev.Time.Format("2006-01-02T15:04:05Z07:00"), describeEvent(ev))
			}
		}
		return nil
	}
	return errors.New("no test case named " + name)
}

func describeEvent(ev *event.Event) string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add("source", ev.Source)
	add("host", ev.Host)
	add("app", ev.App)
	add("action", ev.Action)
	add("outcome", ev.Outcome)
	add("user", ev.User)
	add("src_ip", ev.SrcIP)
	add("dst_ip", ev.DstIP)
	if ev.DstPort != 0 {
		add("dst_port", fmt.Sprint(ev.DstPort))
	}
	add("message", ev.Message)
	return strings.Join(parts, " ")
}

func explainAlert(cmd *cobra.Command, api *apiClient, id string) error {
	w := cmd.OutOrStdout()
	resp, err := api.get(cmd.Context(), "/alerts/"+url.PathEscape(id))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("alert %s: %s: %s", id, resp.Status, strings.TrimSpace(string(body)))
	}
	var a event.Alert
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		return fmt.Errorf("decoding the alert: %w", err)
	}
	fmt.Fprintf(w, "%s (%s), rule %s, kind %s, severity %d\n", a.Title, a.ID, a.RuleID, a.Kind, a.Severity)
	fmt.Fprintf(w, "  %s\n", ruletest.Describe(&a))
	for _, s := range a.Steps {
		fmt.Fprintf(w, "  step %-12s at %s  event %s\n", s.Name, s.Time.Format(time.RFC3339), s.EventID)
	}
	if len(a.Steps) == 0 && len(a.EventIDs) > 0 {
		fmt.Fprintf(w, "  events: %s\n", strings.Join(a.EventIDs, ", "))
	}
	keys := make([]string, 0, len(a.Fields))
	for k := range a.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %s = %s\n", k, a.Fields[k])
	}
	return nil
}

// printRejected prints the Sigma rules the load left out, then a summary:
// how many were loaded, rejected (by reason) and skipped by the filters.
// It returns how many were rejected.
func printRejected(w io.Writer, set *rules.Set) int {
	sigmaRules := 0
	for _, r := range set.Rules {
		if r.Sigma != nil || r.SigmaCorrelation != nil {
			sigmaRules++
		}
	}
	reasons := map[string]int{}
	rejected, skipped := 0, 0
	for _, r := range set.Rejected {
		if r.Skipped {
			skipped++
			continue
		}
		rejected++
		fmt.Fprintln(w, r.String())
		reasons[reasonClass(r.Reason)]++
	}
	classes := make([]string, 0, len(reasons))
	for c := range reasons {
		classes = append(classes, c)
	}
	sort.Slice(classes, func(i, j int) bool {
		if reasons[classes[i]] != reasons[classes[j]] {
			return reasons[classes[i]] > reasons[classes[j]]
		}
		return classes[i] < classes[j]
	})
	var parts []string
	for _, c := range classes {
		parts = append(parts, fmt.Sprintf("%s %d", c, reasons[c]))
	}
	summary := fmt.Sprintf("Sigma: %d loaded, %d rejected", sigmaRules, rejected)
	if len(parts) > 0 {
		summary += ": " + strings.Join(parts, ", ")
	}
	fmt.Fprintf(w, "%s; %d skipped by status or level\n", summary, skipped)
	return rejected
}

// reasonClass groups rejection reasons for the summary: the reason up to
// its first quote or colon detail.
func reasonClass(reason string) string {
	switch {
	case strings.HasPrefix(reason, "logsource "):
		if _, after, ok := strings.Cut(reason, "}: "); ok {
			return "logsource: " + after
		}
		return "logsource"
	case strings.Contains(reason, "unknown modifier"):
		return "unsupported modifier"
	case strings.Contains(reason, "no pipeline maps it"):
		return "unmapped field"
	case strings.Contains(reason, "correlation"):
		return "correlation"
	case strings.HasPrefix(reason, "invalid YAML"):
		return "invalid YAML"
	}
	if i := strings.IndexAny(reason, ":\""); i > 0 {
		return strings.TrimSpace(reason[:i])
	}
	return reason
}

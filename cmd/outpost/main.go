// Command outpost is the Outpost appliance: one binary that runs the whole
// pipeline (`outpost run`), checks a config (`outpost check-config`), shows
// the pipeline working on a bundled scenario (`outpost demo`) and says which
// build it is (`outpost version`).
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"
	_ "time/tzdata" // RFC 3164 time zones on hosts without zoneinfo (distroless)

	"github.com/spf13/cobra"

	"github.com/outpost-siem/outpost/aggregator/config"
	"github.com/outpost-siem/outpost/aggregator/pipeline"
	"github.com/outpost-siem/outpost/cmd/outpost/demo"
	"github.com/outpost-siem/outpost/forwarder/receiver"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	bld := currentBuild()
	root := &cobra.Command{
		Use:           "outpost",
		Short:         "Outpost correlates Azure and syslog events next to the workloads and forwards only derived alerts, as CEF, to the on-prem SIEM",
		SilenceUsage:  true,
		SilenceErrors: false,
		Version:       bld.Version,
	}
	var configPath string
	run := &cobra.Command{
		Use:   "run",
		Short: "Run the appliance with a config file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := pipeline.LoadConfig(configPath)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			logger := newLogger(cfg.Log, os.Stderr)
			if limit, from := cfg.EffectiveMemoryLimit(); limit > 0 {
				debug.SetMemoryLimit(limit)
				logger.Info("memory limit", "limit", config.ByteSize(limit), "from", from)
			}
			p, err := pipeline.Open(ctx, cfg, bld.Version, logger)
			if err != nil {
				return err
			}
			udp, tcp := p.SyslogAddrs()
			logger.Info("listening", "syslog_udp", udp, "syslog_tcp", tcp,
				"syslog_tls", p.SyslogListenAddrs("tls"), "syslog_relp", p.SyslogListenAddrs("relp"), "http", p.HTTPAddr(),
				"forwarding_to", forwardingTo(cfg))
			// SIGHUP reloads the rules and the TLS listeners' certificates;
			// a rule set with problems is rejected (logged) and the running
			// one stays, and so do certificates that do not load.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for range hup {
					_ = p.Reload()
				}
			}()
			return p.Run(ctx)
		},
	}
	run.Flags().StringVarP(&configPath, "config", "c", "/etc/outpost/outpost.yaml", "config file")

	var static bool
	check := &cobra.Command{
		Use:   "check-config",
		Short: "Validate a config file and the rules it points to, then exit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := pipeline.LoadConfig(configPath)
			if err != nil {
				return printProblems(cmd.ErrOrStderr(), configPath, err)
			}
			if err := pipeline.CheckDisk(cfg); err != nil {
				return printProblems(cmd.ErrOrStderr(), configPath, err)
			}
			n, err := pipeline.CheckRules(cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: config OK, %d rules enabled\n", configPath, n)
			if static {
				return nil
			}
			// What the machine gives it: files, data dir, ports, names.
			checks := pipeline.CheckDeployment(cmd.Context(), cfg)
			for _, c := range checks {
				fmt.Fprintln(cmd.OutOrStdout(), "  "+c.String())
			}
			if !pipeline.DeploymentOK(checks) {
				return fmt.Errorf("%s: the deployment does not give Outpost what the config needs (the fail lines above)", configPath)
			}
			return nil
		},
	}
	check.Flags().StringVarP(&configPath, "config", "c", "/etc/outpost/outpost.yaml", "config file")
	check.Flags().BoolVar(&static, "static", false, "check the config and rules only, not the files, data dir, listen addresses and names it needs on this machine")

	var keep bool
	var noise int
	var serve string
	demoCmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole pipeline in a temp dir on 127.0.0.1 and replay a bundled attack scenario",
		Long: `demo starts everything Outpost is — embedded NATS with JetStream, Badger
state, the syslog listeners, the shipped rules and the CEF forwarder — in a
temporary directory, plus a TCP receiver on 127.0.0.1 standing in for the
on-prem SIEM. It replays a scenario over real syslog (UDP, TCP LF-framed and
octet-counted): benign noise with an SSH brute force from one address hidden
in it, followed by a successful root logon. It prints the CEF the receiver
got and what crossed the "link" compared with what came in.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return demo.Run(ctx, cmd.OutOrStdout(), demo.Options{Version: bld.Version, Keep: keep, Noise: noise, Serve: serve,
				Logger: newLogger(pipeline.LogConfig{Level: "warn"}, cmd.ErrOrStderr())})
		},
	}
	demoCmd.Flags().BoolVar(&keep, "keep", false, "keep the temp dir (JetStream store and Badger state) for a look afterwards")
	demoCmd.Flags().IntVar(&noise, "noise", 5000, "benign lines to hide the attack in")
	demoCmd.Flags().StringVar(&serve, "serve", "", "keep running afterwards with the status page on this loopback address, e.g. 127.0.0.1:9464")

	root.AddCommand(run, check, demoCmd, newReceiveCmd(), newRulesCmd(), newStatusCmd(), newVersionCmd(bld))
	return root
}

// printProblems prints the config problems err carries, one per line as
// "file: [line N: ][key.path: ]message", and returns a one-line summary
// for cobra to print; an error without problems (a file that cannot be
// read) is returned as it is.
func printProblems(w io.Writer, file string, err error) error {
	var list *config.ErrorList
	if !errors.As(err, &list) {
		return err
	}
	for _, p := range list.Problems {
		if p.File == "" {
			p.File = file
		}
		fmt.Fprintln(w, p)
	}
	if len(list.Problems) == 1 {
		return fmt.Errorf("%s: invalid config: 1 problem", file)
	}
	return fmt.Errorf("%s: invalid config: %d problems", file, len(list.Problems))
}

func newLogger(c pipeline.LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func newReceiveCmd() *cobra.Command {
	var listen string
	var stamp bool
	cmd := &cobra.Command{
		Use:   "receive",
		Short: "Print the syslog messages received over TCP (a stand-in SIEM, to check the path from Outpost)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			r, err := receiver.Listen(listen)
			if err != nil {
				return err
			}
			defer r.Close()
			fmt.Fprintf(cmd.ErrOrStderr(), "receiving syslog on tcp %s\n", r.Addr())
			for seen := 0; ; {
				msgs, err := r.Wait(ctx, seen+1)
				now := time.Now().UnixMilli()
				for _, m := range msgs[seen:] {
					if stamp {
						fmt.Fprintf(cmd.OutOrStdout(), "%d %s\n", now, m)
					} else {
						fmt.Fprintln(cmd.OutOrStdout(), m)
					}
				}
				seen = len(msgs)
				if err != nil {
					return nil
				}
			}
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:6514", "TCP address to listen on")
	cmd.Flags().BoolVar(&stamp, "stamp", false, "prefix each message with when it arrived (Unix milliseconds), for latency measurements")
	return cmd
}

// forwardingTo lists the destinations' addresses for the start-up log line.
func forwardingTo(cfg *pipeline.Config) []string {
	var out []string
	for _, d := range cfg.Forwarder.Destinations {
		out = append(out, d.Name+"="+d.Transport+"://"+d.Address)
	}
	return out
}

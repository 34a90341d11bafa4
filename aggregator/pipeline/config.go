package pipeline

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/config"
	"github.com/outpost-siem/outpost/aggregator/ingest/azureblob"
	"github.com/outpost-siem/outpost/aggregator/ingest/syslog"
	"github.com/outpost-siem/outpost/aggregator/state"
	"github.com/outpost-siem/outpost/aggregator/window"
	"github.com/outpost-siem/outpost/forwarder"
	"github.com/outpost-siem/outpost/rules"
	"github.com/outpost-siem/outpost/rules/sigma"
)

// Config is outpost.yaml. Every section is owned by its stage's package;
// deploy/outpost.example.yaml documents every key with its default.
type Config struct {
	// DataDir holds JetStream's store (embedded server) and Badger's state.
	DataDir string `yaml:"data_dir"`
	// MemoryLimit is a soft limit on the process's memory (Go's
	// GOMEMLIMIT): the garbage collector works harder near it instead of
	// letting the heap double. Left out or 0: half of the memory available
	// (the cgroup's memory.max or MemTotal, whichever is lower); GOMEMLIMIT
	// in the environment wins (GOMEMLIMIT=off: none). See
	// EffectiveMemoryLimit.
	MemoryLimit config.ByteSize `yaml:"memory_limit"`
	Log         LogConfig       `yaml:"log"`
	HTTP        HTTPConfig      `yaml:"http"`
	NATS        bus.Config      `yaml:"nats"`
	Ingest      struct {
		Syslog    syslog.Config    `yaml:"syslog"`
		AzureBlob azureblob.Config `yaml:"azure_blob"`
	} `yaml:"ingest"`
	Rules     RulesConfig      `yaml:"rules"`
	Windows   window.Config    `yaml:"windows"`
	State     state.Config     `yaml:"state"`
	Disk      state.DiskConfig `yaml:"disk"`
	Forwarder forwarder.Config `yaml:"forwarder"`
}

// LogConfig is the `log` section.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // text (default) or json
}

// RulesConfig is the `rules` section.
type RulesConfig struct {
	// Dir holds the rule files (*.yaml): native rules and Sigma rules.
	// Empty: the shipped pack.
	Dir string `yaml:"dir"`
	// Sigma lists directories of Sigma rules (e.g. a clone of the team's
	// Sigma repository), read recursively. A rule there that Outpost
	// cannot run is left out and reported (`outpost rules lint --sigma`),
	// where a problem in Dir rejects the whole set.
	Sigma []string `yaml:"sigma"`
	// SigmaStatus lists the statuses taken from Sigma dirs; default
	// [stable, test].
	SigmaStatus []string `yaml:"sigma_status"`
	// SigmaMinLevel is the lowest level taken from Sigma dirs; default
	// every level.
	SigmaMinLevel string `yaml:"sigma_min_level"`
	// SigmaPipelines are pipeline files (docs/sigma.md) applied after the
	// shipped ones.
	SigmaPipelines []string `yaml:"sigma_pipelines"`
}

// Validate checks the Sigma filters.
func (c *RulesConfig) Validate() error {
	var errs config.Errors
	for _, st := range c.SigmaStatus {
		if !slices.Contains(sigma.Statuses, st) {
			errs.Add("rules.sigma_status", "%q is not one of %s", st, strings.Join(sigma.Statuses, ", "))
		}
	}
	if c.SigmaMinLevel != "" && !slices.Contains(sigma.Levels, c.SigmaMinLevel) {
		errs.Add("rules.sigma_min_level", "%q is not one of %s", c.SigmaMinLevel, strings.Join(sigma.Levels, ", "))
	}
	return errs.Err()
}

// SigmaOptions reads the pipeline files and returns what a rules load
// takes from the Sigma settings.
func (c *RulesConfig) SigmaOptions() (rules.SigmaOptions, error) {
	o := rules.SigmaOptions{Dirs: c.Sigma, Status: c.SigmaStatus, MinLevel: c.SigmaMinLevel}
	for _, f := range c.SigmaPipelines {
		data, err := os.ReadFile(f)
		if err != nil {
			return o, fmt.Errorf("rules.sigma_pipelines: %w", err)
		}
		pl, err := sigma.ParsePipeline(f, data)
		if err != nil {
			return o, fmt.Errorf("rules.sigma_pipelines: %w", err)
		}
		o.Pipelines = append(o.Pipelines, pl)
	}
	return o, nil
}

// LoadConfig reads, decodes (unknown keys are errors) and validates the
// config file at path.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	var c Config
	if err := config.DecodeStrict(path, data, &c); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: invalid config:\n%w", path, err)
	}
	return &c, nil
}

// Validate applies defaults and returns every problem of every section, as
// a *config.ErrorList.
func (c *Config) Validate() error {
	var errs config.Errors
	// Each section's Validate names its keys from the top of the file.
	add := func(err error) { errs.Append("", err) }
	if c.DataDir == "" {
		errs.Add("data_dir", "required, e.g. /var/lib/outpost")
	}
	switch c.Log.Level {
	case "":
		c.Log.Level = "info"
	case "debug", "info", "warn", "error":
	default:
		errs.Add("log.level", "%q must be debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "":
		c.Log.Format = "text"
	case "text", "json":
	default:
		errs.Add("log.format", "%q must be text or json", c.Log.Format)
	}
	c.HTTP.validate(&errs)
	add(c.NATS.Validate())
	add(c.Ingest.Syslog.Validate())
	add(c.Ingest.AzureBlob.Validate())
	if sl := c.Ingest.Syslog; len(sl.UDP)+len(sl.TCP)+len(sl.TLS)+len(sl.RELP) == 0 && len(c.Ingest.AzureBlob.Accounts) == 0 {
		errs.Add("ingest.syslog", "no listeners: set ingest.syslog.udp, tcp, tls or relp (or configure ingest.azure_blob.accounts)")
	}
	add(c.Rules.Validate())
	add(c.Windows.Validate())
	if c.Windows.Fused == nil {
		// With the embedded server this process owns every partition of
		// the windows: the rule filter hands them its matches in process.
		fused := c.NATS.URL == ""
		c.Windows.Fused = &fused
	}
	add(c.State.Validate())
	add(c.Disk.Validate())
	add(c.Forwarder.Validate())
	return errs.Err()
}

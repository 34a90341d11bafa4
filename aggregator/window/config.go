package window

import (
	"time"

	"github.com/outpost-siem/outpost/aggregator/config"
	"github.com/outpost-siem/outpost/aggregator/engine"
)

// Config is the `windows` section of outpost.yaml.
type Config struct {
	// Lateness (allowed_lateness, source_lateness) is the engine's: the
	// rule filter's gate, the watermark and the states all enforce it.
	engine.Lateness `yaml:",inline"`
	// StateGrace is added to every state key's TTL (window + lateness, or
	// suppress) so a backlog replayed after downtime still finds its state.
	StateGrace time.Duration `yaml:"state_grace"`
	// IdleAdvance: when the watermark has not moved for this long, it
	// catches up with the wall clock minus AllowedLateness and follows it
	// (absence rules need time to pass even when every source is silent).
	IdleAdvance time.Duration `yaml:"idle_advance"`
	// MaxKeysPerRule caps the live group keys of one rule; matches for new
	// keys beyond it are dropped and counted
	// (outpost_windows_key_cap_hits_total), which bounds the state a flood
	// of distinct addresses can create.
	MaxKeysPerRule int `yaml:"max_keys_per_rule"`
	// CacheKeys is how many window states are kept in memory decoded, in
	// front of the state log and Badger. Beyond it the least recently used
	// unchanged ones are let go of first, then, at the end of a batch, the
	// decoded copies of those changed since the last checkpoint (which
	// stay in memory encoded until it is durable). Default 100,000.
	CacheKeys int `yaml:"cache_keys"`
	// CheckpointKeys bounds the states changed since the last checkpoint:
	// a checkpoint is taken early when they reach half of it, and batches
	// wait for the checkpoint being written when they reach all of it.
	// Default 100,000.
	CheckpointKeys int `yaml:"checkpoint_keys"`
	// ColdBytes bounds the memory of the states the cache evicted that are
	// kept encoded behind it (`cold_cache_size`), so that reading one back
	// is a decode rather than a Badger read. Default 0: off. It made bursts
	// over 300,000 live states 25-38% faster, but raised VmHWM by a few
	// times its size and did not help a 10-minute run (docs/benchmarks.md).
	ColdBytes config.ByteSize `yaml:"cold_cache_size"`
	// CheckpointInterval is how often the states changed in memory are
	// written to Badger together (and the matches that changed them
	// acked). A crash replays the matches since the last checkpoint.
	// Default 1s.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// StateLog (`state_log`) bounds the state log (log.go): a compaction
	// writes the states logged since the last one under their keys when
	// they take Memory in memory (default 256 MiB), when the records take
	// Size on disk (default 1 GiB), or every Interval (default 10m, which
	// bounds what a restart reads back).
	StateLog StateLogConfig `yaml:"state_log"`
	// Fused: the rule filter hands its matches to the windows in process,
	// skipping the MATCHES stream (one encode, one JetStream write and one
	// decode per match fewer), the windows applying one batch while the
	// filter evaluates the next. This process must then own every
	// partition, as it does with the embedded NATS server. Default: true
	// with the embedded server (fused ran ~16% faster on ~15-20% less CPU
	// at 1,000 and at 100,000 attacking addresses, medians of alternated
	// bursts, with about the same memory: docs/benchmarks.md), false with
	// an external cluster (nats.url), which keeps MATCHES between the
	// stages for the cluster case; pipeline.Config.Validate sets it.
	Fused *bool `yaml:"fused"`
}

// StateLogConfig is `windows.state_log`.
type StateLogConfig struct {
	Memory   config.ByteSize `yaml:"memory"`
	Size     config.ByteSize `yaml:"size"`
	Interval time.Duration   `yaml:"interval"`
}

// IsFused reports Fused (false if unset).
func (c *Config) IsFused() bool { return c.Fused != nil && *c.Fused }

// Validate applies defaults.
func (c *Config) Validate() error {
	var errs, lateness config.Errors
	c.Lateness.Validate(&lateness)
	errs.Append("windows", lateness.Err())
	if c.StateGrace == 0 {
		c.StateGrace = time.Hour
	}
	if c.IdleAdvance == 0 {
		c.IdleAdvance = 5 * time.Minute
	}
	if c.MaxKeysPerRule == 0 {
		c.MaxKeysPerRule = 1_000_000
	}
	if c.CacheKeys == 0 {
		c.CacheKeys = 100_000
	}
	if c.CheckpointKeys == 0 {
		c.CheckpointKeys = 100_000
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = time.Second
	}
	if c.StateLog.Memory == 0 {
		c.StateLog.Memory = 256 << 20
	}
	if c.StateLog.Size == 0 {
		c.StateLog.Size = 1 << 30
	}
	if c.StateLog.Interval == 0 {
		c.StateLog.Interval = 10 * time.Minute
	}
	if c.StateLog.Memory < 0 {
		errs.Add("windows.state_log.memory", "must not be negative, got %d", c.StateLog.Memory)
	}
	if c.StateLog.Size < 0 {
		errs.Add("windows.state_log.size", "must not be negative, got %d", c.StateLog.Size)
	}
	if c.StateLog.Interval < 0 {
		errs.Add("windows.state_log.interval", "must not be negative, got %s", c.StateLog.Interval)
	}
	if c.CheckpointInterval < 0 {
		errs.Add("windows.checkpoint_interval", "must not be negative, got %s", c.CheckpointInterval)
	}
	if c.StateGrace < 0 {
		errs.Add("windows.state_grace", "must not be negative, got %s", c.StateGrace)
	}
	if c.IdleAdvance < 0 {
		errs.Add("windows.idle_advance", "must not be negative, got %s", c.IdleAdvance)
	}
	if c.CacheKeys < 0 {
		errs.Add("windows.cache_keys", "must be positive")
	}
	if c.CheckpointKeys < 0 {
		errs.Add("windows.checkpoint_keys", "must be positive")
	}
	if c.MaxKeysPerRule < 0 {
		errs.Add("windows.max_keys_per_rule", "must be positive")
	}
	return errs.Err()
}

// Option configures a Stage.
type Option func(*Stage)

// WithClock makes now the stage's wall clock (the watermark's idle
// advance): for tests and `rules`-driven comparisons.
func WithClock(now func() time.Time) Option { return func(s *Stage) { s.now = now } }

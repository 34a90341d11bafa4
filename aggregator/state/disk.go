package state

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/outpost-siem/outpost/aggregator/config"
)

// DiskConfig is the `disk` section of outpost.yaml.
type DiskConfig struct {
	// MinFree is the free-space floor of the data dir's filesystem (space
	// available to Outpost, as df shows it). Below it the sources are held
	// back (their publishes wait: syslog TCP senders feel back-pressure,
	// Azure blobs stay unread at their checkpoints), /readyz fails and a
	// warning is logged; below half of it the stages that write (rule
	// filter, windows, forwarder) pause too, so nothing writes into the
	// last of the disk. Default 1GiB, at least 512MiB: Badger maps its
	// memtables and value log as sparse files, and a write into a sparse
	// page on a full disk kills the process with SIGBUS; the floor keeps
	// that space free.
	MinFree config.ByteSize `yaml:"min_free"`
	// CheckInterval is how often free space is measured. Default 1s.
	CheckInterval time.Duration `yaml:"check_interval"`
}

// Validate applies defaults.
func (c *DiskConfig) Validate() error {
	var errs config.Errors
	if c.MinFree == 0 {
		c.MinFree = 1 << 30
	}
	if c.MinFree < 512<<20 {
		errs.Add("disk.min_free", "must be at least 512MiB (Badger's mapped files need it), got %s", c.MinFree)
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = time.Second
	}
	if c.CheckInterval < 10*time.Millisecond || c.CheckInterval > time.Minute {
		errs.Add("disk.check_interval", "must be 10ms to 1m, got %s", c.CheckInterval)
	}
	return errs.Err()
}

// DiskGuard watches the free space of the data dir's filesystem and
// holds back writers while it is low (see DiskConfig.MinFree). It
// implements bus.Gate.
type DiskGuard struct {
	dir      string
	interval time.Duration
	log      *slog.Logger

	minFree atomic.Uint64
	free    atomic.Uint64
	low     atomic.Bool // free < minFree: ingest held
	crit    atomic.Bool // free < minFree/2: every writer held

	mu      sync.Mutex    // serializes check
	changed chan struct{} // closed and replaced when low or crit changes; guarded by mu
}

// NewDiskGuard measures dir's filesystem once (an error if it cannot) and
// registers outpost_disk_free_bytes, outpost_disk_min_free_bytes and
// outpost_disk_low on reg. Run keeps measuring.
func NewDiskGuard(dir string, cfg DiskConfig, logger *slog.Logger, reg prometheus.Registerer) (*DiskGuard, error) {
	g := &DiskGuard{dir: dir, interval: cfg.CheckInterval, log: logger.With("component", "disk"), changed: make(chan struct{})}
	g.minFree.Store(uint64(cfg.MinFree))
	if err := g.check(); err != nil {
		return nil, err
	}
	gauges := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outpost_disk_free_bytes",
			Help: "Bytes available on the data dir's filesystem.",
		}, func() float64 { return float64(g.free.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outpost_disk_min_free_bytes",
			Help: "disk.min_free: below it ingest is held back and /readyz fails; below half of it every stage pauses.",
		}, func() float64 { return float64(g.minFree.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outpost_disk_low",
			Help: "0: enough free space; 1: below disk.min_free, ingest held back; 2: below half of it, every stage paused.",
		}, func() float64 {
			switch {
			case g.crit.Load():
				return 2
			case g.low.Load():
				return 1
			}
			return 0
		}),
	}
	for _, c := range gauges {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// Run measures every CheckInterval until ctx ends.
func (g *DiskGuard) Run(ctx context.Context) error {
	t := time.NewTicker(g.interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			err := g.check()
			if err != nil && !failing {
				g.log.Error("measuring free disk space failed; keeping the last measurement", "dir", g.dir, "err", err)
			}
			failing = err != nil
		}
	}
}

// check measures once and updates the state, logging each change.
func (g *DiskGuard) check() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	var st unix.Statfs_t
	if err := unix.Statfs(g.dir, &st); err != nil {
		return fmt.Errorf("measuring free space of %s: %w", g.dir, err)
	}
	free := st.Bavail * uint64(st.Bsize)
	g.free.Store(free)
	min := g.minFree.Load()
	low, crit := free < min, free < min/2
	if low == g.low.Load() && crit == g.crit.Load() {
		return nil
	}
	g.low.Store(low)
	g.crit.Store(crit)
	args := []any{"dir", g.dir, "free", config.ByteSize(free), "min_free", config.ByteSize(min)}
	switch {
	case crit:
		g.log.Error("disk almost full: every stage paused until space is freed", args...)
	case low:
		g.log.Warn("disk space below disk.min_free: ingest held back, not ready, until space is freed", args...)
	default:
		g.log.Info("disk space back above disk.min_free: resuming", args...)
	}
	close(g.changed)
	g.changed = make(chan struct{})
	return nil
}

// SetMinFree changes the floor and measures again (config reload, tests).
func (g *DiskGuard) SetMinFree(n config.ByteSize) error {
	g.minFree.Store(uint64(n))
	return g.check()
}

// Check returns an error while free space is below the floor, for /readyz.
func (g *DiskGuard) Check() error {
	if g == nil || !g.low.Load() {
		return nil
	}
	return fmt.Errorf("disk: %s free in %s, below disk.min_free %s: ingest held back",
		config.ByteSize(g.free.Load()), g.dir, config.ByteSize(g.minFree.Load()))
}

// IngestHeld reports whether new input must wait.
func (g *DiskGuard) IngestHeld() bool { return g.low.Load() }

// ProcessHeld reports whether every writer must wait.
func (g *DiskGuard) ProcessHeld() bool { return g.crit.Load() }

// Changed returns a channel closed at the next change of either state.
func (g *DiskGuard) Changed() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.changed
}

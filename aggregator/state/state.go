// Package state opens the Badger database that holds Outpost's durable
// state: rule window state and source checkpoints. Keys are prefixed
// by their owner so stages share one database without colliding:
//
//	w/<rule>\x00<group key>   window state (aggregator/window)
//	b/c/<account>\x00<container>\x00<blob>
//	                          Azure blob checkpoints (aggregator/ingest/azureblob)
//	b/r/<account>\x00<container>
//	                          oldest hour the Azure blob source still lists
//	f/<destination>\x00<alert id>
//	                          alerts already delivered, with a TTL (forwarder)
package state

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/outpost-siem/outpost/aggregator/config"
)

// Config is the `state` section of outpost.yaml.
type Config struct {
	// SyncWrites fsyncs every commit. Matches are acked only after the
	// windows' checkpoint holding them is committed, so with sync on, acked state survives power loss;
	// with it off, it survives a process crash but not a host crash.
	SyncWrites *bool `yaml:"sync_writes"`
	// GCInterval is how often the value log is garbage-collected.
	GCInterval time.Duration `yaml:"gc_interval"`
	// CacheSize is Badger's block cache (its index cache gets half as
	// much). Default 128MiB.
	CacheSize config.ByteSize `yaml:"cache_size"`
}

// Validate applies defaults.
func (c *Config) Validate() error {
	var errs config.Errors
	if c.SyncWrites == nil {
		t := true
		c.SyncWrites = &t
	}
	if c.GCInterval == 0 {
		c.GCInterval = 5 * time.Minute
	}
	if c.CacheSize == 0 {
		c.CacheSize = 128 << 20
	}
	if c.CacheSize < 1<<20 {
		errs.Add("state.cache_size", "must be at least 1MiB, got %s", c.CacheSize)
	}
	if c.GCInterval < time.Second {
		errs.Add("state.gc_interval", "must be at least 1s, got %s", c.GCInterval)
	}
	return errs.Err()
}

// DB is the shared Badger database.
type DB struct {
	*badger.DB
	cfg Config
	log *slog.Logger
}

// Open opens (creating if needed) the database in dir.
func Open(dir string, cfg Config, logger *slog.Logger) (*DB, error) {
	log := logger.With("component", "state")
	// Badger's defaults size it for a database server (5 memtables of
	// 64 MiB, a 256 MiB block cache); Outpost's state is small values under
	// many keys, on a VM that also runs JetStream, so it gets less memory.
	opts := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log}).
		WithSyncWrites(*cfg.SyncWrites).
		WithNumVersionsToKeep(1).
		WithCompactL0OnClose(true).
		// 8 MiB memtables: a flush builds an L0 table of that size, and the
		// table builders' buffers scale with it (32 MiB ones held ~280 MiB
		// at 300,000 window states; docs/benchmarks.md).
		WithMemTableSize(8 << 20).
		WithNumMemtables(3).
		// Compressing a table block allocates a buffer per block that
		// stays with the table builder until the table is written: with
		// Snappy, flushes and compactions held ~400 MiB at 300,000 keys
		// (docs/benchmarks.md). The values are small and bounded by TTL.
		WithCompression(options.None).
		// Two compactors for two cores (Badger's default is four).
		WithNumCompactors(2).
		WithBlockCacheSize(int64(cfg.CacheSize)).
		WithIndexCacheSize(int64(cfg.CacheSize) / 2).
		// Badger maps its memtable logs (2x MemTableSize each) and value
		// log (2x ValueLogFileSize) as sparse files; writing into a page
		// the full disk cannot back is SIGBUS, not an error. v4 has no
		// unmapped mode short of InMemory, so Outpost keeps that space
		// small (64 MiB value log files) and the disk guard
		// (disk.min_free, whose half is 512 MiB by default) keeps it free.
		WithValueLogFileSize(64 << 20).
		// A window state of 128 bytes or more is appended to the value
		// log, the LSM tree keeping its key and a pointer: a compaction of
		// the state log writes every state changed since the last one
		// (300,000 at 100,000 attacking addresses), and with the values in
		// the tree, building its tables took ~390 MiB more VmRSS at once;
		// with them in the value log ~260 (docs/benchmarks.md). The value
		// log's garbage is collected every gc_interval.
		WithValueThreshold(128).
		// Each key prefix has one writer, which orders its own writes (the
		// windows stage commits its batches in order from one goroutine).
		WithDetectConflicts(false)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("opening state in %s: %w", dir, err)
	}
	return &DB{DB: db, cfg: cfg, log: log}, nil
}

// RunGC garbage-collects the value log every GCInterval until ctx ends.
func (d *DB) RunGC(ctx context.Context) error {
	t := time.NewTicker(d.cfg.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			for {
				err := d.RunValueLogGC(0.5)
				if err != nil {
					if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
						d.log.Warn("value log GC failed", "err", err)
					}
					break
				}
			}
		}
	}
}

// badgerLogger sends Badger's logs to slog; its info lines are debug here.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any)   { l.log.Error(fmt.Sprintf(f, a...)) }
func (l badgerLogger) Warningf(f string, a ...any) { l.log.Warn(fmt.Sprintf(f, a...)) }
func (l badgerLogger) Infof(f string, a ...any)    { l.log.Debug(fmt.Sprintf(f, a...)) }
func (l badgerLogger) Debugf(f string, a ...any)   {}

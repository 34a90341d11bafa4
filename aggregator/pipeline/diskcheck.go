package pipeline

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/outpost-siem/outpost/aggregator/config"
)

// CheckDisk reports limits the data dir's filesystem can never hold: the
// embedded JetStream's streams at their max_bytes plus disk.min_free
// larger than the whole filesystem. Such a config runs until the disk
// fills, so check-config and Open reject it. The data dir need not exist
// yet: its nearest existing parent is measured.
func CheckDisk(cfg *Config) error {
	if cfg.NATS.URL != "" {
		return nil // the streams live on the cluster's disks
	}
	dir := cfg.DataDir
	var st unix.Statfs_t
	for {
		err := unix.Statfs(dir, &st)
		if err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if !errors.Is(err, os.ErrNotExist) || parent == dir {
			return fmt.Errorf("data_dir: measuring %s: %w", dir, err)
		}
		dir = parent
	}
	total := config.ByteSize(st.Blocks * uint64(st.Bsize))
	s := cfg.NATS.Streams
	need := s.Events.MaxBytes + s.Matches.MaxBytes + s.Alerts.MaxBytes + s.DeadLetter.MaxBytes
	if need+cfg.Disk.MinFree > total {
		var errs config.Errors
		errs.Add("nats.streams", "max_bytes add up to %s, plus disk.min_free %s, but data_dir's filesystem (%s) holds %s in all; lower them",
			need, cfg.Disk.MinFree, dir, total)
		return errs.Err()
	}
	return nil
}

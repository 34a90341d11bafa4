package pipeline

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
)

// autoMemoryShare is the part of the machine's (or the cgroup's) memory the
// process aims to stay under when memory_limit is left out: the garbage
// collector works harder near it instead of letting the heap double, which
// under a windows backlog doubled a live heap of ~700 MB into ~1.5 GB of
// resident memory (docs/benchmarks.md, "Memory during a SIEM outage").
const autoMemoryShare = 2 // 1/2

// EffectiveMemoryLimit returns the soft memory limit to give the Go runtime and
// where it came from: memory_limit when set; otherwise half of the memory
// available to the process, the lower of the cgroup's memory.max and the
// machine's MemTotal; 0 when neither can be read. GOMEMLIMIT in the
// environment wins over both, as the runtime reads it itself.
func (c *Config) EffectiveMemoryLimit() (limit int64, from string) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0, "GOMEMLIMIT"
	}
	if c.MemoryLimit > 0 {
		return int64(c.MemoryLimit), "memory_limit"
	}
	avail := memTotal("/proc/meminfo")
	if cg := cgroupMax("/sys/fs/cgroup/memory.max"); cg > 0 && (avail == 0 || cg < avail) {
		avail = cg
	}
	if avail == 0 {
		return 0, "none"
	}
	return avail / autoMemoryShare, "auto"
}

// memTotal reads MemTotal from a /proc/meminfo file, in bytes; 0 if absent.
func memTotal(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil || kb <= 0 {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// cgroupMax reads a cgroup v2 memory.max file, in bytes; 0 for "max" or
// when it cannot be read.
func cgroupMax(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
	if err != nil || n <= 0 {
		return 0
	}
	return n
}

package pipeline

import (
	"os"
	"path/filepath"
	"testing"
)

func TestEffectiveMemoryLimit(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	os.Unsetenv("GOMEMLIMIT")
	cfg := &Config{MemoryLimit: 800 << 20}
	if l, from := cfg.EffectiveMemoryLimit(); l != 800<<20 || from != "memory_limit" {
		t.Errorf("set: %d %s", l, from)
	}
	cfg.MemoryLimit = 0
	want := memTotal("/proc/meminfo")
	if cg := cgroupMax("/sys/fs/cgroup/memory.max"); cg > 0 && cg < want {
		want = cg
	}
	if want == 0 {
		t.Skip("no /proc/meminfo here")
	}
	if l, from := cfg.EffectiveMemoryLimit(); l != want/2 || from != "auto" {
		t.Errorf("left out: %d %s, want %d auto (half of %d)", l, from, want/2, want)
	}
	t.Setenv("GOMEMLIMIT", "1GiB")
	if l, from := cfg.EffectiveMemoryLimit(); l != 0 || from != "GOMEMLIMIT" {
		t.Errorf("GOMEMLIMIT set: %d %s", l, from)
	}
}

func TestMemoryFiles(t *testing.T) {
	dir := t.TempDir()
	mi := filepath.Join(dir, "meminfo")
	os.WriteFile(mi, []byte("MemFree:  100 kB\nMemTotal:       4028440 kB\n"), 0o600)
	if got := memTotal(mi); got != 4028440<<10 {
		t.Errorf("memTotal = %d", got)
	}
	cg := filepath.Join(dir, "memory.max")
	for in, want := range map[string]int64{"max\n": 0, "2147483648\n": 2 << 30, "junk": 0} {
		os.WriteFile(cg, []byte(in), 0o600)
		if got := cgroupMax(cg); got != want {
			t.Errorf("cgroupMax(%q) = %d, want %d", in, got, want)
		}
	}
	if memTotal(filepath.Join(dir, "none")) != 0 || cgroupMax(filepath.Join(dir, "none")) != 0 {
		t.Error("a missing file must read 0")
	}
}

package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestResolveBuild(t *testing.T) {
	const rev = "1bf0a03abcdef0123456789abcdef0123456789a"
	vcs := func(modified string) []debug.BuildSetting {
		return []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: rev},
			{Key: "vcs.time", Value: "2025-12-04T19:36:00Z"},
			{Key: "vcs.modified", Value: modified},
		}
	}
	info := func(version string, settings []debug.BuildSetting) *debug.BuildInfo {
		return &debug.BuildInfo{Main: debug.Module{Path: "github.com/outpost-siem/outpost", Version: version}, Settings: settings}
	}
	for _, tt := range []struct {
		name    string
		stamped build
		info    *debug.BuildInfo
		want    build
	}{
		{"stamped by the package build wins over build info",
			build{Version: "1.2.3", Commit: "abc123", Date: "2025-12-05T10:00:00Z"},
			info("v0.0.0-20251204193600-1bf0a03abcde", vcs("false")),
			build{Version: "1.2.3", Commit: "abc123", Date: "2025-12-05T10:00:00Z"}},
		{"only the version stamped: commit and date from VCS",
			build{Version: "1.2.3"},
			info("(devel)", vcs("true")),
			build{Version: "1.2.3", Commit: rev + "+dirty", Date: "2025-12-04T19:36:00Z"}},
		{"go build in a clone: the pseudo-version and the revision",
			build{},
			info("v0.0.0-20251204193600-1bf0a03abcde+dirty", vcs("true")),
			build{Version: "0.0.0-20251204193600-1bf0a03abcde+dirty", Commit: rev + "+dirty", Date: "2025-12-04T19:36:00Z"}},
		{"go install at a tag: the module version, no VCS",
			build{},
			info("v1.4.0", nil),
			build{Version: "1.4.0", Commit: "unknown", Date: "unknown"}},
		{"(devel) with a revision: dev and the short revision",
			build{},
			info("(devel)", vcs("false")),
			build{Version: "dev+1bf0a03abcde", Commit: rev, Date: "2025-12-04T19:36:00Z"}},
		{"(devel) with a modified tree",
			build{},
			info("(devel)", vcs("true")),
			build{Version: "dev+1bf0a03abcde.dirty", Commit: rev + "+dirty", Date: "2025-12-04T19:36:00Z"}},
		{"-buildvcs=false: nothing better than dev",
			build{},
			info("(devel)", []debug.BuildSetting{{Key: "-buildvcs", Value: "false"}}),
			build{Version: "dev", Commit: "unknown", Date: "unknown"}},
		{"no build info at all",
			build{}, nil,
			build{Version: "dev", Commit: "unknown", Date: "unknown"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := resolveBuild(tt.stamped, tt.info); got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// The binary built with the package build's -ldflags reports the stamps,
// in `outpost version` and in cobra's --version, and its alerts carry the
// version as CEF's Device Version (the demo, all on 127.0.0.1).
func TestVersionStampedAtBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "outpost")
	ldflags := "-X main.version=9.8.7~test -X main.commit=0123456789abcdef -X main.date=2025-12-04T19:36:00Z"
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", bin, ".")
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("outpost version: %v\n%s", err, out)
	}
	for _, line := range []string{"version: 9.8.7~test\n", "commit:  0123456789abcdef\n", "date:    2025-12-04T19:36:00Z\n", "go:      go1."} {
		if !strings.Contains(string(out), line) {
			t.Errorf("outpost version lacks %q:\n%s", line, out)
		}
	}
	out, err = exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "9.8.7~test") {
		t.Errorf("outpost --version: %v\n%s", err, out)
	}
	out, err = exec.CommandContext(ctx, bin, "demo", "--noise", "100").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "CEF:0|Outpost|Outpost|9.8.7~test|ssh-brute-force|") {
		t.Errorf("outpost demo: CEF's Device Version should be the stamped version: %v\n%s", err, out)
	}
}

package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// Set at build time by deploy/package/build.sh:
//
//	-ldflags "-X main.version=1.2.3 -X main.commit=<sha> -X main.date=2025-12-04T19:36:00Z"
//
// Each one left empty is taken from the build info the go command records
// (see resolveBuild). These are the only package-level variables here, and
// nothing assigns them at run time.
var (
	version string
	commit  string
	date    string
)

// build is what `outpost version` prints. Version is also the CEF Device
// Version of every alert.
type build struct {
	Version string // e.g. 1.2.3, or 0.0.0-20251204193600-1bf0a03abcde+dirty from the module
	Commit  string // the VCS revision; "+dirty" when the tree had uncommitted changes
	Date    string // RFC 3339: when it was built, or without a stamp the commit's time
}

// currentBuild is this binary's build, from the stamps or its build info.
func currentBuild() build {
	info, _ := debug.ReadBuildInfo()
	return resolveBuild(build{Version: version, Commit: commit, Date: date}, info)
}

// resolveBuild fills what the linker did not stamp from the build info (nil
// when the binary has none):
//
//   - Version: the main module's version ("v1.2.3" from `go install ...@v1.2.3`,
//     or the pseudo-version the go command derives from VCS), without its
//     leading "v" so that it reads like the package's version. When the
//     module says "(devel)" (built with -buildvcs=false or outside a
//     repository): "dev", or "dev+<revision>" when a revision is known.
//   - Commit: vcs.revision, with "+dirty" when vcs.modified is true.
//   - Date: vcs.time, the commit's time (the go command records no build time).
//
// What neither gives is "unknown". Pure: it depends on its arguments only.
func resolveBuild(stamped build, info *debug.BuildInfo) build {
	var revision, vcsTime string
	var modified bool
	mainVersion := ""
	if info != nil {
		mainVersion = info.Main.Version
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.time":
				vcsTime = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	b := stamped
	if b.Commit == "" && revision != "" {
		b.Commit = revision
		if modified {
			b.Commit += "+dirty"
		}
	}
	if b.Date == "" {
		b.Date = vcsTime
	}
	if b.Version == "" {
		switch {
		case mainVersion != "" && mainVersion != "(devel)":
			b.Version = strings.TrimPrefix(mainVersion, "v")
		case revision != "":
			b.Version = "dev+" + shortRevision(revision)
			if modified {
				b.Version += ".dirty"
			}
		default:
			b.Version = "dev"
		}
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	if b.Date == "" {
		b.Date = "unknown"
	}
	return b
}

func shortRevision(r string) string {
	if len(r) > 12 {
		return r[:12]
	}
	return r
}

func newVersionCmd(b build) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and build date",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "version: %s\ncommit:  %s\ndate:    %s\ngo:      %s %s/%s\n",
				b.Version, b.Commit, b.Date, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}

// Package debpackage tests the Debian package that build.sh makes: it
// builds it with the documented command, inspects it with dpkg-deb,
// installs it on this machine with dpkg, runs the installed binary as the
// outpost user, upgrades it over an edited config, verifies the unit with
// systemd-analyze and purges it. It needs root and dpkg, and so skips
// without them — except under CI=true (.ci/run), where that is a failure.
package debpackage

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The versions the test builds: A is installed, B upgrades it. Both carry
// "pkgtest", by which the test recognises a package a crashed run left.
const (
	versionA = "0.0.0+pkgtest.1"
	versionB = "0.0.0+pkgtest.2"
	marker   = "pkgtest"
)

const (
	conffile = "/etc/outpost/outpost.yaml"
	unitFile = "/usr/lib/systemd/system/outpost.service"
	dataDir  = "/var/lib/outpost"
	wantLink = "/etc/systemd/system/multi-user.target.wants/outpost.service"
)

// need skips, or fails under CI=true, when the machine cannot run the test.
func need(t *testing.T, ok bool, msg string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true, so this is a failure")
	}
	t.Skip(msg)
}

func have(tool string) bool {
	_, err := exec.LookPath(tool)
	return err == nil
}

// run runs a command with a timeout and returns its combined output; a
// non-zero exit is returned as the error, with the output.
func run(t *testing.T, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = errors.Join(err, ctx.Err())
	}
	return out.String(), err
}

// must is run that fails the test on an error.
func must(t *testing.T, timeout time.Duration, env []string, name string, args ...string) string {
	t.Helper()
	out, err := run(t, timeout, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// asOutpost runs the installed binary as the service user.
func asOutpost(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return run(t, time.Minute, nil, "runuser", append([]string{"-u", "outpost", "--", "/usr/bin/outpost"}, args...)...)
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "deploy/package/build.sh")); err != nil {
		t.Fatal(err)
	}
	return root
}

// installedVersion is the version dpkg has installed, "" for none.
func installedVersion(t *testing.T) string {
	t.Helper()
	out, err := run(t, time.Minute, nil, "dpkg-query", "-W", "-f=${db:Status-Abbrev} ${Version}", "outpost")
	if err != nil {
		return "" // not known to dpkg
	}
	f := strings.Fields(out) // "ii  1.2.3": wanted, installed, no error; a version
	if len(f) != 2 || f[0] != "ii" {
		return ""
	}
	return f[1]
}

// build runs the documented command for version into dist.
func build(t *testing.T, root, dist, version string, archs ...string) {
	t.Helper()
	timeout := 15 * time.Minute
	if d, ok := t.Deadline(); ok {
		timeout = min(timeout, time.Until(d)-time.Minute)
	}
	must(t, timeout, []string{"VERSION=" + version, "DIST=" + dist, "ARCHS=" + strings.Join(archs, " ")},
		filepath.Join(root, "deploy/package/build.sh"))
}

func debPath(dist, version, arch string) string {
	return filepath.Join(dist, "outpost_"+version+"_"+arch+".deb")
}

func TestDebianPackage(t *testing.T) {
	requireMachine(t)
	root := repoRoot(t)
	dist := t.TempDir()
	host := runtime.GOARCH
	build(t, root, dist, versionA, "amd64", "arm64")

	t.Run("contents", func(t *testing.T) {
		for _, arch := range []string{"amd64", "arm64"} {
			checkContents(t, root, debPath(dist, versionA, arch))
		}
	})
	t.Run("info", func(t *testing.T) {
		for _, arch := range []string{"amd64", "arm64"} {
			checkInfo(t, debPath(dist, versionA, arch), versionA, arch)
		}
	})
	t.Run("binaries", func(t *testing.T) {
		for arch, machine := range map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64} {
			checkBinary(t, debPath(dist, versionA, arch), machine)
		}
	})

	installFresh(t, debPath(dist, versionA, host))
	edited := nameTheSIEM(t)
	build(t, root, dist, versionB, host)
	upgrade(t, debPath(dist, versionB, host), edited)
	t.Run("systemd-analyze verify", testVerifyUnit)
	removeAndPurge(t, edited)
	t.Run("config written before the install", func(t *testing.T) {
		installOverWrittenConfig(t, debPath(dist, versionB, host), edited)
	})
}

// requireMachine skips (fails under CI=true) where the test cannot run,
// purges what a crashed run left, and purges what this one installs when
// it ends.
func requireMachine(t *testing.T) {
	t.Helper()
	need(t, os.Geteuid() == 0, "the package test installs a package: it must run as root")
	for _, tool := range []string{"dpkg", "dpkg-deb", "dpkg-query", "dpkg-statoverride", "runuser", "git"} {
		need(t, have(tool), tool+" is needed (Debian: dpkg, util-linux, git)")
	}
	need(t, runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64", "the package is built for amd64 and arm64 only")
	switch v := installedVersion(t); {
	case v == "":
	case strings.Contains(v, marker):
		must(t, 2*time.Minute, nil, "dpkg", "--purge", "outpost") // left by a run that crashed
	default:
		need(t, false, "outpost "+v+" is installed here; the package test would replace it")
	}
	t.Cleanup(func() {
		if installedVersion(t) != "" || fileExists(conffile) {
			_, _ = run(t, 2*time.Minute, nil, "dpkg", "--purge", "outpost")
		}
	})
}

// installFresh installs A. The shipped config names no SIEM: installing
// says so, and does not start the service.
func installFresh(t *testing.T, deb string) {
	t.Helper()
	out := must(t, 3*time.Minute, nil, "dpkg", "-i", deb)
	if !strings.Contains(out, "outpost: not started: "+conffile+" is not ready yet:") ||
		!strings.Contains(out, "forwarder.destinations: required: at least one SIEM syslog receiver") {
		t.Errorf("dpkg -i should say the service is not started and why:\n%s", out)
	}
	if v := installedVersion(t); v != versionA {
		t.Fatalf("installed version %q, want %q", v, versionA)
	}
	t.Run("installed", func(t *testing.T) { checkInstalled(t) })
	t.Run("runs as outpost", func(t *testing.T) {
		out, err := asOutpost(t, "version")
		if err != nil || !strings.Contains(out, "version: "+versionA+"\n") || !regexp.MustCompile(`(?m)^commit:  [0-9a-f]{40}`).MatchString(out) {
			t.Errorf("outpost version: %v\n%s", err, out)
		}
		// A fresh install has no SIEM: check-config names exactly that.
		out, err = asOutpost(t, "check-config", "-c", conffile)
		want := conffile + ": forwarder.destinations: required: at least one SIEM syslog receiver (name, address)\n"
		if err == nil || !strings.Contains(out, want) || !strings.Contains(out, "invalid config: 1 problem") {
			t.Errorf("check-config of the shipped config: err %v, want the one problem %q:\n%s", err, want, out)
		}
		out, err = asOutpost(t, "rules", "test", "/usr/share/outpost/rules")
		if err != nil || !strings.Contains(out, " 0 failed") {
			t.Errorf("rules test of the installed pack: %v\n%s", err, out)
		}
	})
}

// nameTheSIEM edits the installed config as an admin would, and returns it.
func nameTheSIEM(t *testing.T) string {
	t.Helper()
	body, err := os.ReadFile(conffile)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(body), "  destinations: []\n",
		"  destinations: # edited by the package test\n    - {name: siem, address: \"127.0.0.1:6514\"}\n", 1)
	if edited == string(body) {
		t.Fatalf("the shipped config has no `  destinations: []` line to edit:\n%s", body)
	}
	if err := os.WriteFile(conffile, []byte(edited), 0o640); err != nil {
		t.Fatal(err)
	}
	if out, err := asOutpost(t, "check-config", "-c", conffile); err != nil || !strings.Contains(out, "config OK") {
		t.Fatalf("check-config of the edited config: %v\n%s", err, out)
	}
	return edited
}

// upgrade installs B over A: the edited config stays, the binary is B's.
func upgrade(t *testing.T, deb, edited string) {
	t.Helper()
	out := must(t, 3*time.Minute, nil, "dpkg", "-i", deb)
	if strings.Contains(out, "not started") {
		t.Errorf("dpkg -i over a ready config should not say it is not ready:\n%s", out)
	}
	t.Run("upgrade", func(t *testing.T) {
		if v := installedVersion(t); v != versionB {
			t.Errorf("installed version %q, want %q", v, versionB)
		}
		if got, err := os.ReadFile(conffile); err != nil || string(got) != edited {
			t.Errorf("the edited config was not kept (err %v):\n%s", err, got)
		}
		leftovers, _ := filepath.Glob("/etc/outpost/*.dpkg-*")
		if len(leftovers) > 0 {
			t.Errorf("dpkg left %v", leftovers)
		}
		checkInstalled(t)
		out, err := asOutpost(t, "version")
		if err != nil || !strings.Contains(out, "version: "+versionB+"\n") {
			t.Errorf("outpost version after the upgrade: %v\n%s", err, out)
		}
		if out, err := asOutpost(t, "check-config", "-c", conffile); err != nil || !strings.Contains(out, "config OK") {
			t.Errorf("check-config after the upgrade: %v\n%s", err, out)
		}
	})
}

func testVerifyUnit(t *testing.T) {
	need(t, have("systemd-analyze"), "systemd-analyze is needed (Debian: systemd)")
	if msgs := verifyUnit(t, unitFile); len(msgs) > 0 {
		t.Errorf("systemd-analyze verify %s:\n%s", unitFile, strings.Join(msgs, "\n"))
	}
	// The filter above must not hide what it looks for: a copy of the
	// unit with an unknown key and a missing binary is reported.
	broken := filepath.Join(t.TempDir(), "outpost.service")
	unit, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(unit), "ExecStart=/usr/bin/outpost ", "ExecStart=/usr/bin/outpost-missing ", 1)
	bad = strings.Replace(bad, "[Service]\n", "[Service]\nNoSuchKey=1\n", 1)
	if err := os.WriteFile(broken, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if msgs := verifyUnit(t, broken); len(msgs) < 2 {
		t.Errorf("systemd-analyze verify of a broken unit reported %q, want the unknown key and the missing binary", msgs)
	}
}

// removeAndPurge: remove keeps the config and the state; purge takes them.
func removeAndPurge(t *testing.T, edited string) {
	t.Helper()
	must(t, 2*time.Minute, nil, "dpkg", "--remove", "outpost")
	t.Run("remove", func(t *testing.T) {
		for _, gone := range []string{"/usr/bin/outpost", unitFile, "/usr/share/outpost"} {
			if fileExists(gone) {
				t.Errorf("%s is still there after dpkg --remove", gone)
			}
		}
		if got, err := os.ReadFile(conffile); err != nil || string(got) != edited {
			t.Errorf("dpkg --remove should keep the edited config (err %v)", err)
		}
		if !fileExists(dataDir) {
			t.Errorf("dpkg --remove should keep %s", dataDir)
		}
	})
	must(t, 2*time.Minute, nil, "dpkg", "--purge", "outpost")
	t.Run("purge", func(t *testing.T) {
		if v := installedVersion(t); v != "" {
			t.Errorf("dpkg still has outpost %s", v)
		}
		for _, gone := range []string{"/etc/outpost", dataDir, wantLink, "/usr/bin/outpost", unitFile, "/usr/share/outpost", "/usr/share/doc/outpost"} {
			if _, err := os.Lstat(gone); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s is still there after dpkg --purge (%v)", gone, err)
			}
		}
		if out, err := run(t, time.Minute, nil, "dpkg-statoverride", "--list", conffile); err == nil {
			t.Errorf("the statoverride outlived the purge: %s", out)
		}
		// Kept, as Debian keeps system users (see README.md).
		if _, err := user.Lookup("outpost"); err != nil {
			t.Errorf("the outpost user should stay after a purge: %v", err)
		}
	})
}

// installOverWrittenConfig: a config written before the install
// (cloud-init's user data runs before the package is there) is kept with
// --force-confold; without it dpkg would stop at its prompt.
func installOverWrittenConfig(t *testing.T, deb, edited string) {
	t.Helper()
	if err := os.MkdirAll("/etc/outpost", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conffile, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	out := must(t, 3*time.Minute, nil, "dpkg", "-i", "--force-confold", deb)
	if strings.Contains(out, "not started") {
		t.Errorf("dpkg -i over a ready config should not say it is not ready:\n%s", out)
	}
	if got, err := os.ReadFile(conffile); err != nil || string(got) != edited {
		t.Errorf("the config written before the install was not kept (err %v)", err)
	}
	if !fileExists(conffile + ".dpkg-dist") {
		t.Errorf("the shipped config should be beside it as %s.dpkg-dist", conffile)
	}
	checkInstalled(t)
	if out, err := asOutpost(t, "check-config", "-c", conffile); err != nil || !strings.Contains(out, "config OK") {
		t.Errorf("check-config: %v\n%s", err, out)
	}
	must(t, 2*time.Minute, nil, "dpkg", "--purge", "outpost")
	if fileExists("/etc/outpost") {
		t.Errorf("/etc/outpost is still there after dpkg --purge")
	}
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

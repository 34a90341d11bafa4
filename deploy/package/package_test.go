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
	"strconv"
	"strings"
	"syscall"
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

	root := repoRoot(t)
	dist := t.TempDir()
	build(t, root, dist, versionA, "amd64", "arm64")
	host := runtime.GOARCH

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

	// Install A. The shipped config names no SIEM: installing says so, and
	// does not start the service.
	out := must(t, 3*time.Minute, nil, "dpkg", "-i", debPath(dist, versionA, host))
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

	// The admin names the SIEM.
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

	// Upgrade to B: the edited config stays, the binary is B's.
	build(t, root, dist, versionB, host)
	out = must(t, 3*time.Minute, nil, "dpkg", "-i", debPath(dist, versionB, host))
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

	t.Run("systemd-analyze verify", func(t *testing.T) {
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
	})

	// Remove keeps the config and the state; purge takes them.
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

	// A config written before the install (cloud-init's user data runs
	// before the package is there) is kept with --force-confold; without
	// it dpkg would stop at its prompt.
	t.Run("config written before the install", func(t *testing.T) {
		if err := os.MkdirAll("/etc/outpost", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(conffile, []byte(edited), 0o600); err != nil {
			t.Fatal(err)
		}
		out := must(t, 3*time.Minute, nil, "dpkg", "-i", "--force-confold", debPath(dist, versionB, host))
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
	})
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// entry is one line of dpkg-deb --contents.
type entry struct{ mode, owner string }

func checkContents(t *testing.T, root, deb string) {
	t.Helper()
	out := must(t, time.Minute, nil, "dpkg-deb", "--contents", deb)
	got := map[string]entry{}
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("%s: unexpected line %q", deb, line)
		}
		got[strings.TrimSuffix(strings.TrimPrefix(f[5], "."), "/")] = entry{f[0], f[1]}
	}
	want := map[string]entry{
		"/usr/bin/outpost":                         {"-rwxr-xr-x", "root/root"},
		"/usr/lib/systemd/system/outpost.service":  {"-rw-r--r--", "root/root"},
		"/etc/outpost":                             {"drwxr-xr-x", "root/root"},
		"/etc/outpost/outpost.yaml":                {"-rw-r-----", "root/root"}, // group outpost by statoverride
		"/usr/share/outpost/rules":                 {"drwxr-xr-x", "root/root"},
		"/usr/share/doc/outpost/README.package.md": {"-rw-r--r--", "root/root"},
	}
	pack := filepath.Join(root, "rules/pack")
	err := filepath.WalkDir(pack, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == pack {
			return err
		}
		rel, _ := filepath.Rel(pack, path)
		if d.IsDir() {
			want["/usr/share/outpost/rules/"+rel] = entry{"drwxr-xr-x", "root/root"}
		} else {
			want["/usr/share/outpost/rules/"+rel] = entry{"-rw-r--r--", "root/root"}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for path, w := range want {
		if g, ok := got[path]; !ok {
			t.Errorf("%s: lacks %s", filepath.Base(deb), path)
		} else if g != w {
			t.Errorf("%s: %s is %s %s, want %s %s", filepath.Base(deb), path, g.mode, g.owner, w.mode, w.owner)
		}
	}
	// Besides those, only the directories leading to them.
	parents := map[string]bool{}
	for path := range want {
		for dir := filepath.Dir(path); dir != "/"; dir = filepath.Dir(dir) {
			parents[dir] = true
		}
	}
	for path, g := range got {
		if _, ok := want[path]; !ok && !(parents[path] && strings.HasPrefix(g.mode, "d")) {
			t.Errorf("%s: unexpected %s %s %s", filepath.Base(deb), g.mode, g.owner, path)
		}
	}
}

func checkInfo(t *testing.T, deb, version, arch string) {
	t.Helper()
	out := must(t, time.Minute, nil, "dpkg-deb", "--field", deb)
	fields := map[string]string{}
	for line := range strings.Lines(out) {
		if k, v, ok := strings.Cut(line, ": "); ok && !strings.HasPrefix(k, " ") {
			fields[k] = strings.TrimSpace(v)
		}
	}
	for k, want := range map[string]string{
		"Package":      "outpost",
		"Version":      version,
		"Architecture": arch,
		"Depends":      "adduser",
		"Recommends":   "systemd",
	} {
		if fields[k] != want {
			t.Errorf("%s: %s is %q, want %q", filepath.Base(deb), k, fields[k], want)
		}
	}
	if !regexp.MustCompile(`^.+ <.+@.+>$`).MatchString(fields["Maintainer"]) {
		t.Errorf("%s: Maintainer %q is not a name and an address", filepath.Base(deb), fields["Maintainer"])
	}
	info := must(t, time.Minute, nil, "dpkg-deb", "--info", deb)
	for _, script := range []string{"postinst", "prerm", "postrm", "conffiles"} {
		if !regexp.MustCompile(`(?m)^\s+\d+ bytes,\s+\d+ lines\s+\*?\s+` + script + `\b`).MatchString(info) {
			t.Errorf("%s: no %s in the control archive:\n%s", filepath.Base(deb), script, info)
		}
	}
	if conffiles := must(t, time.Minute, nil, "dpkg-deb", "--info", deb, "conffiles"); conffiles != conffile+"\n" {
		t.Errorf("%s: conffiles %q, want only %s", filepath.Base(deb), conffiles, conffile)
	}
}

// checkBinary extracts the package and checks its binary is a static ELF
// for machine.
func checkBinary(t *testing.T, deb string, machine elf.Machine) {
	t.Helper()
	dir := t.TempDir()
	must(t, time.Minute, nil, "dpkg-deb", "-x", deb, dir)
	f, err := elf.Open(filepath.Join(dir, "usr/bin/outpost"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != machine {
		t.Errorf("%s: the binary is for %v, want %v", filepath.Base(deb), f.Machine, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s: the binary has an interpreter; built without CGO_ENABLED=0?", filepath.Base(deb))
		}
	}
}

// checkInstalled checks what dpkg -i and postinst leave.
func checkInstalled(t *testing.T) {
	t.Helper()
	u, err := user.Lookup("outpost")
	if err != nil {
		t.Fatalf("no outpost user: %v", err)
	}
	if uid, _ := strconv.Atoi(u.Uid); uid == 0 || uid >= 1000 {
		t.Errorf("outpost's uid %s is not a system uid", u.Uid)
	}
	g, err := user.LookupGroup("outpost")
	if err != nil {
		t.Fatalf("no outpost group: %v", err)
	}
	for _, tt := range []struct {
		path     string
		mode     fs.FileMode
		uid, gid string
	}{
		{dataDir, fs.ModeDir | 0o750, u.Uid, g.Gid},
		{conffile, 0o640, "0", g.Gid},
		{"/usr/bin/outpost", 0o755, "0", "0"},
		{unitFile, 0o644, "0", "0"},
	} {
		fi, err := os.Stat(tt.path)
		if err != nil {
			t.Error(err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != tt.mode || strconv.Itoa(int(st.Uid)) != tt.uid || strconv.Itoa(int(st.Gid)) != tt.gid {
			t.Errorf("%s: %v %d:%d, want %v %s:%s", tt.path, fi.Mode(), st.Uid, st.Gid, tt.mode, tt.uid, tt.gid)
		}
	}
	// Enabled (the link is written even where systemd is not running).
	if target, err := os.Readlink(wantLink); err != nil || filepath.Base(target) != "outpost.service" {
		t.Errorf("the unit is not enabled: %s -> %q (%v)", wantLink, target, err)
	}
}

// verifyUnit runs systemd-analyze verify on a unit file and returns its
// messages about that unit; those about other units (its dependencies, the
// machine's own) are not this package's.
func verifyUnit(t *testing.T, path string) []string {
	t.Helper()
	out, err := run(t, time.Minute, []string{"SYSTEMD_LOG_COLOR=0", "SYSTEMD_PAGER="}, "systemd-analyze", "verify", path)
	var msgs []string
	for line := range strings.Lines(out) {
		if strings.Contains(line, filepath.Base(path)) || strings.Contains(line, path) || strings.Contains(line, "outpost") {
			msgs = append(msgs, strings.TrimSpace(line))
		}
	}
	if err != nil && len(msgs) == 0 {
		t.Logf("systemd-analyze verify %s failed on other units: %v\n%s", path, err, out)
	}
	return msgs
}

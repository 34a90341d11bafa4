package debpackage

import (
	"debug/elf"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

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

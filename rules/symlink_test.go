package rules

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/expr-lang/expr/vm"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// LoadDir reads only what is inside the rules directory: a rule file or a
// list file that is a symlink to somewhere else, a list file under a
// symlinked directory, and a list path that climbs out are refused with a
// clear error. A symlink that stays inside the directory is fine.
func TestLoadDirStaysInsideTheDir(t *testing.T) {
	const rule = "rules:\n  - {id: r, title: T, kind: match, severity: 1, condition: 'in_list(\"l\", user)'}\n"
	tests := []struct {
		name  string
		setup func(t *testing.T, dir, outside string)
		want  string // "" for no error
	}{
		{"rule file symlinked outside", func(t *testing.T, dir, outside string) {
			write(t, filepath.Join(outside, "evil.yaml"), rule+"lists:\n  l: [x]\n")
			symlink(t, filepath.Join(outside, "evil.yaml"), filepath.Join(dir, "evil.yaml"))
			write(t, filepath.Join(dir, "r.yaml"), "rules: []\n")
		}, "evil.yaml: resolves outside the rules directory"},
		{"list file symlinked outside", func(t *testing.T, dir, outside string) {
			write(t, filepath.Join(outside, "secret.txt"), "root\n")
			symlink(t, filepath.Join(outside, "secret.txt"), filepath.Join(dir, "l.txt"))
			write(t, filepath.Join(dir, "r.yaml"), rule+"lists:\n  l: {file: l.txt}\n")
		}, `lists.l: list file "l.txt" resolves outside the rules directory`},
		{"list file under a symlinked directory", func(t *testing.T, dir, outside string) {
			write(t, filepath.Join(outside, "lists", "secret.txt"), "root\n")
			symlink(t, filepath.Join(outside, "lists"), filepath.Join(dir, "lists"))
			write(t, filepath.Join(dir, "r.yaml"), rule+"lists:\n  l: {file: lists/secret.txt}\n")
		}, `lists.l: list file "lists/secret.txt" resolves outside the rules directory`},
		{"list path climbs out", func(t *testing.T, dir, outside string) {
			write(t, filepath.Join(outside, "secret.txt"), "root\n")
			write(t, filepath.Join(dir, "r.yaml"), rule+"lists:\n  l: {file: ../outside/secret.txt}\n")
		}, `lists.l: list file "../outside/secret.txt" resolves outside the rules directory`},
		{"symlinks inside the dir are fine", func(t *testing.T, dir, outside string) {
			write(t, filepath.Join(dir, "lists", "admins.txt"), "root\n")
			symlink(t, "admins.txt", filepath.Join(dir, "lists", "alias.txt"))
			write(t, filepath.Join(dir, "shared", "r.src"), rule+"lists:\n  l: {file: lists/alias.txt}\n")
			symlink(t, "shared/r.src", filepath.Join(dir, "r.yaml"))
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			dir, outside := filepath.Join(base, "rules"), filepath.Join(base, "outside")
			for _, d := range []string{dir, outside} {
				if err := os.MkdirAll(d, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			tt.setup(t, dir, outside)
			set, err := LoadDir(dir)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				var v vm.VM
				if hits, _, err := set.Rule("r").Evaluate(&v, &event.Event{User: "root"}, nil); err != nil || len(hits) != 1 {
					t.Errorf("the list read through the symlink: hits %v, err %v", hits, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v\nwant it to mention %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "outside the rules directory") && strings.Contains(err.Error(), "root") {
				t.Errorf("the error quotes the outside file's content: %v", err)
			}
		})
	}
}

func write(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

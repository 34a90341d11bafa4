package main

import (
	"errors"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// jsonPackage is the one JSON library Outpost's code uses.
//
// encoding/json, not github.com/goccy/go-json (which the hot paths used
// while events, matches and window state still crossed the bus as JSON).
// With those on the binary codecs JSON is off the per-event path (alerts,
// dead-letter samples, records of older versions, the HTTP API, the Azure
// parsers), and goccy v0.10.6 was wrong for what is left: it reads past
// the end of its buffer on a key that ends in a backslash (`{"\`: an
// index-out-of-range panic that depends on the heap, goccy/go-json#604),
// ignores the `omitzero` option (#539; Match.Seen has it), and its Valid
// and Unmarshal accept what is not JSON (leading zeros, raw control
// characters in strings) where the Azure parsers rely on rejecting it.
// docs/benchmarks.md, "One JSON library", has the measurements.
const jsonPackage = "encoding/json"

// jsonExceptions are the other JSON packages code may import, by import
// path: the one directory whose files may, and why.
var jsonExceptions = map[string]struct{ dir, why string }{
	"github.com/valyala/fastjson": {
		dir: "aggregator/ingest/payload",
		why: "syslog messages that are JSON (Sysmon and Windows events from NXLog, Winlogbeat) are " +
			"flattened per event: without encoding/json's maps of interfaces a Sysmon line parses in " +
			"~60% of the time (docs/benchmarks.md, tenth session). It reads leniently (a value such as " +
			"01 is kept as written), which suits log text; the Azure parsers, which rely on rejecting " +
			"what is not JSON, keep encoding/json. FuzzJSON covers it.",
	},
}

// otherJSON are JSON libraries whose import path does not say "json".
var otherJSON = []string{
	"github.com/bytedance/sonic",
	"github.com/francoispqt/gojay",
	"github.com/wI2L/jettison",
	"github.com/sugawarayuuta/sonnet",
}

func isJSONLibrary(path string) bool {
	if path == jsonPackage {
		return false
	}
	for _, p := range otherJSON {
		if path == p || strings.HasPrefix(path, p+"/") {
			return true
		}
	}
	return strings.Contains(strings.ToLower(path), "json")
}

// moduleRoot is the directory of the go.mod above the test's directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		} else if !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// TestOneJSONLibrary keeps the code on one JSON library: no .go file of
// the module, whatever its build tags, imports another (or imports
// something else under the name json).
func TestOneJSONLibrary(t *testing.T) {
	root := moduleRoot(t)
	var bad []string
	files, users := 0, 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") ||
				name == "testdata" || name == "vendor" || name == "node_modules") {
				return filepath.SkipDir
			}
			if path != root {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir // another module
				}
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		files++
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		for _, imp := range f.Imports {
			p, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				return err
			}
			if p == jsonPackage {
				users++
			}
			exc, excepted := jsonExceptions[p]
			switch {
			case excepted && filepath.ToSlash(filepath.Dir(rel)) == exc.dir:
			case isJSONLibrary(p):
				bad = append(bad, rel+":"+strconv.Itoa(fset.Position(imp.Pos()).Line)+": imports "+p)
			case imp.Name != nil && imp.Name.Name == "json" && p != jsonPackage:
				bad = append(bad, rel+":"+strconv.Itoa(fset.Position(imp.Pos()).Line)+": imports "+p+" as json")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 50 || users == 0 {
		t.Fatalf("walked %d .go files under %s, %d import %s: not the module", files, root, users, jsonPackage)
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		t.Errorf("Outpost's code uses one JSON library, %s (see jsonPackage in imports_test.go); "+
			"add a justified exception to jsonExceptions if another is really needed:\n\t%s",
			jsonPackage, strings.Join(bad, "\n\t"))
	}
}

func TestIsJSONLibrary(t *testing.T) {
	for path, want := range map[string]bool{
		"encoding/json":                      false,
		"encoding/binary":                    false,
		"github.com/goccy/go-json":           true,
		"github.com/json-iterator/go":        true,
		"github.com/segmentio/encoding/json": true,
		"github.com/bytedance/sonic":         true,
		"github.com/bytedance/sonic/decoder": true,
		"encoding/json/v2":                   true,
		"github.com/nats-io/nats.go":         false,
	} {
		if got := isJSONLibrary(path); got != want {
			t.Errorf("isJSONLibrary(%q) = %v, want %v", path, got, want)
		}
	}
}

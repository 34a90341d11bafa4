package rules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/outpost-siem/outpost/rules/sigma"
)

// LoadDir loads every *.yaml and *.yml file under dir. List files named by
// `lists:` are read relative to the file that names them. Nothing outside
// dir is read: the files are opened through an os.Root, so a symlink that
// leads out of dir (or is absolute) is a load error, as is a list path
// that climbs out of it; symlinks that stay inside are followed.
func LoadDir(dir string) (*Set, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("reading rules dir: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("rules dir %s is not a directory", dir)
	}
	return Load(dir, SigmaOptions{})
}

// Load loads the rules dir as LoadDir does, plus the Sigma rules of
// o.Dirs (see SigmaOptions). An empty dir is the shipped pack.
func Load(dir string, o SigmaOptions) (*Set, error) {
	if dir == "" {
		sub, err := fs.Sub(pack, "pack")
		if err != nil {
			return nil, err
		}
		return load(sub, "rules/pack", o)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("reading rules dir: %w", err)
	}
	defer root.Close()
	return load(root.FS(), dir, o)
}

// outsideDir is how a path that leads out of the rules dir is reported.
const outsideDir = "resolves outside the rules directory (symlinks must be relative and stay inside it)"

// escapes reports whether err is os.Root refusing a path that leads out of
// the rules dir. os does not export that error, so its text is matched;
// any other error is reported as it is, and the file is not read either way.
func escapes(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe) && pe.Err != nil && pe.Err.Error() == "path escapes from parent"
}

// LoadFS loads every *.yaml and *.yml file in fsys; name prefixes the file
// names in error messages.
func LoadFS(fsys fs.FS, name string) (*Set, error) { return load(fsys, name, SigmaOptions{}) }

// LoadError lists every problem found while loading a rule set.
type LoadError struct {
	Problems []string
}

func (e *LoadError) Error() string {
	return fmt.Sprintf("%d problem(s) in rules:\n  %s", len(e.Problems), strings.Join(e.Problems, "\n  "))
}

// loader reads in three passes over all files, so a rule may use a list or
// macro defined in another file: lists and macros, then rules, then tests.
type loader struct {
	fsys   fs.FS
	root   string
	set    *Set
	seen   map[string]string // rule id -> where it was first defined
	lists  map[string]*List
	macros map[string]*macro
	rel    map[string]string // display name -> path inside fsys
	errs   []string

	sigma     SigmaOptions
	sigmaDocs []sigmaDoc
}

type section struct {
	file  string
	key   *yaml.Node
	value *yaml.Node
}

// yamlFiles lists the *.yaml and *.yml files of fsys, sorted.
func yamlFiles(fsys fs.FS, root string) ([]string, error) {
	var files []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing rule files in %s: %w", root, err)
	}
	sort.Strings(files)
	return files, nil
}

func load(fsys fs.FS, root string, o SigmaOptions) (*Set, error) {
	files, err := yamlFiles(fsys, root)
	if err != nil {
		return nil, err
	}
	l := &loader{
		fsys: fsys, root: root,
		set:   &Set{byID: map[string]*Rule{}},
		seen:  map[string]string{},
		lists: map[string]*List{}, macros: map[string]*macro{},
		rel:   map[string]string{},
		sigma: o,
	}
	for _, dir := range o.Dirs {
		if err := l.sigmaDir(dir); err != nil {
			return nil, err
		}
	}
	var sections []section
	for _, f := range files {
		data, err := fs.ReadFile(fsys, f)
		if escapes(err) {
			l.errs = append(l.errs, fmt.Sprintf("%s: %s", path.Join(root, f), outsideDir))
			continue
		}
		if err != nil {
			l.errs = append(l.errs, fmt.Sprintf("%s: %v", path.Join(root, f), err))
			continue
		}
		l.rel[path.Join(root, f)] = f
		sections = append(sections, l.sections(path.Join(root, f), data)...)
	}
	for _, s := range sections {
		switch s.key.Value {
		case "lists":
			l.listSection(s.file, s.value)
		case "macros":
			l.macroSection(s.file, s.value)
		}
	}
	for _, s := range sections {
		if s.key.Value == "rules" {
			if s.value.Kind != yaml.SequenceNode {
				l.errorf(s.file, s.value.Line, "", "rules: expected a list of rules")
				continue
			}
			for _, rn := range s.value.Content {
				l.rule(s.file, rn)
			}
		}
	}
	l.sigmaRules()
	for _, s := range sections {
		if s.key.Value == "tests" {
			l.testSection(s.file, s.value)
		}
	}
	if len(l.errs) > 0 {
		return nil, &LoadError{Problems: l.errs}
	}
	l.set.index = NewIndex(l.set.Rules)
	return l.set, nil
}

var topKeys = []string{"rules", "lists", "macros", "tests"}

// sections splits a file into its top-level sections, reporting unknown
// keys and YAML syntax errors.
func (l *loader) sections(file string, data []byte) []section {
	var out []section
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			l.errs = append(l.errs, fmt.Sprintf("%s: %s", file, strings.TrimPrefix(err.Error(), "yaml: ")))
			return out
		}
		if len(doc.Content) == 0 {
			continue
		}
		top := doc.Content[0]
		if sigma.Is(top) {
			l.sigmaDocs = append(l.sigmaDocs, sigmaDoc{file: file, node: top})
			continue
		}
		if top.Kind != yaml.MappingNode {
			l.errorf(file, top.Line, "", "expected a mapping with `rules:` (and optionally lists:, macros:, tests:)")
			continue
		}
		for i := 0; i+1 < len(top.Content); i += 2 {
			k, v := top.Content[i], top.Content[i+1]
			if !contains(topKeys, k.Value) {
				l.errorf(file, k.Line, "", "unknown key %q (expected one of: %s)", k.Value, strings.Join(topKeys, ", "))
				continue
			}
			out = append(out, section{file: file, key: k, value: v})
		}
	}
}

func (l *loader) errorf(file string, line int, id, format string, args ...any) {
	where := fmt.Sprintf("%s:%d", file, line)
	if id != "" {
		where += fmt.Sprintf(": rule %q", id)
	}
	l.errs = append(l.errs, where+": "+fmt.Sprintf(format, args...))
}

// mapping returns a mapping node's values and key lines by key, reporting
// keys not in allowed.
func (l *loader) mapping(file string, n *yaml.Node, id string, allowed []string) (map[string]*yaml.Node, bool) {
	if n.Kind != yaml.MappingNode {
		l.errorf(file, n.Line, id, "expected a mapping")
		return nil, false
	}
	nodes := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if !contains(allowed, k.Value) {
			l.errorf(file, k.Line, id, "unknown key %q (expected one of: %s)", k.Value, strings.Join(allowed, ", "))
			continue
		}
		nodes[k.Value] = n.Content[i+1]
	}
	return nodes, true
}

func scalar(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// sigmaDir reads the Sigma rules under dir (SigmaOptions.Dirs): documents
// that are not Sigma rules are skipped, and a file that does not parse is
// a rejected rule, not a failed load.
func (l *loader) sigmaDir(dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("reading Sigma rules dir: %w", err)
	}
	defer root.Close()
	files, err := yamlFiles(root.FS(), dir)
	if err != nil {
		return err
	}
	for _, f := range files {
		name := path.Join(dir, f)
		data, err := fs.ReadFile(root.FS(), f)
		if err != nil {
			reason := err.Error()
			if escapes(err) {
				reason = outsideDir
			}
			l.set.Rejected = append(l.set.Rejected, Rejected{File: name, Reason: reason})
			continue
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var doc yaml.Node
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				l.set.Rejected = append(l.set.Rejected, yamlRejected(name, err))
				break
			}
			if len(doc.Content) > 0 && sigma.Is(doc.Content[0]) {
				l.sigmaDocs = append(l.sigmaDocs, sigmaDoc{file: name, node: doc.Content[0], lenient: true})
			}
		}
	}
	return nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// yamlRejected reports a file of a Sigma dir that is not valid YAML, at
// the line the parser names.
func yamlRejected(file string, err error) Rejected {
	msg := err.Error()
	line := 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	}
	return Rejected{File: file, Line: line, Reason: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

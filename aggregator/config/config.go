// Package config holds the small pieces every stage's configuration shares:
// a byte-size type that reads "64KiB" or "10GB", and strict YAML decoding
// that rejects unknown keys and reports every problem with its line.
//
// Each stage owns its own Config struct; the pipeline package composes them
// into the one file a user edits.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"
	"go.yaml.in/yaml/v3"
)

// ByteSize is a size in bytes. In YAML it is an integer or a string with a
// unit: "512", "64KiB", "10GB", "1.5GiB" (IEC and SI units both work).
type ByteSize int64

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: expected a size such as 64KiB, got a %s", n.Line, kindName(n.Kind))
	}
	v, err := humanize.ParseBytes(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: invalid size %q: expected a number with an optional unit such as KiB, MiB, GB", n.Line, n.Value)
	}
	if v > 1<<62 {
		return fmt.Errorf("line %d: size %q is too large", n.Line, n.Value)
	}
	*b = ByteSize(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (b ByteSize) MarshalYAML() (any, error) { return b.String(), nil }

// String renders the size with an IEC unit, e.g. "64 KiB".
func (b ByteSize) String() string { return humanize.IBytes(uint64(b)) }

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "sequence"
	case yaml.AliasNode:
		return "alias"
	default:
		return "value"
	}
}

// DecodeStrict decodes one YAML document from data into out. Unknown keys
// are errors. The returned error is an *ErrorList with every problem the
// decoder found, each with file and line; it renders one per line.
func DecodeStrict(file string, data []byte, out any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(out)
	if errors.Is(err, io.EOF) {
		return nil // an empty file is an empty config: all defaults
	}
	if err == nil {
		return nil
	}
	var errs Errors
	var te *yaml.TypeError
	if errors.As(err, &te) {
		for _, e := range te.Errors {
			errs = append(errs, problemAt(file, e))
		}
	} else {
		errs = append(errs, problemAt(file, err.Error()))
	}
	return errs.Err()
}

// problemAt turns one of the YAML decoder's messages, "line 3: field foo
// not found in type ...", into a Problem with its line. The decoder's
// messages carry no column and no key path.
func problemAt(file, msg string) Problem {
	p := Problem{File: file, Msg: strings.TrimPrefix(msg, "yaml: ")}
	if rest, ok := strings.CutPrefix(p.Msg, "line "); ok {
		if num, tail, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil && n > 0 {
				p.Line, p.Msg = n, tail
			}
		}
	}
	return p
}

// Problem is one thing wrong with a config.
type Problem struct {
	// File is the config file, when the problem was found reading it
	// (DecodeStrict); "" for problems Validate found in decoded values.
	File string
	// Path is the key's dotted path from the top of the file, e.g.
	// "forwarder.destinations[siem].address"; "" when unknown (the YAML
	// decoder's errors give only a line).
	Path string
	// Line and Column are 1-based positions in File; 0 when unknown.
	Line, Column int
	// Msg says what is wrong, without the path or position.
	Msg string
}

// String renders the problem as a user reads it:
// "[file: ][line N[, column C]: ][path: ]msg".
func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File + ": ")
	}
	if p.Line > 0 {
		fmt.Fprintf(&b, "line %d", p.Line)
		if p.Column > 0 {
			fmt.Fprintf(&b, ", column %d", p.Column)
		}
		b.WriteString(": ")
	}
	if p.Path != "" {
		b.WriteString(p.Path + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Errors collects validation problems so a user sees all of them at once.
type Errors []Problem

// Add records one problem at the key path (see Problem.Path).
func (e *Errors) Add(path, format string, args ...any) {
	*e = append(*e, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// Append records the problems err carries (an *ErrorList, e.g. from a
// section's Validate) with prefix put in front of their paths, for a
// component that does not know where in the file it sits. Any other error
// becomes one problem at prefix. A nil err records nothing.
func (e *Errors) Append(prefix string, err error) {
	if err == nil {
		return
	}
	var list *ErrorList
	if !errors.As(err, &list) {
		*e = append(*e, Problem{Path: prefix, Msg: err.Error()})
		return
	}
	for _, p := range list.Problems {
		p.Path = joinPath(prefix, p.Path)
		*e = append(*e, p)
	}
}

func joinPath(prefix, path string) string {
	switch {
	case prefix == "":
		return path
	case path == "":
		return prefix
	case strings.HasPrefix(path, "["):
		return prefix + path
	default:
		return prefix + "." + path
	}
}

// Err returns nil when nothing was recorded, else an *ErrorList of all.
func (e Errors) Err() error {
	if len(e) == 0 {
		return nil
	}
	return &ErrorList{Problems: slices.Clone(e)}
}

// ErrorList is the error Errors.Err and DecodeStrict return. Get the
// problems with errors.As:
//
//	var list *config.ErrorList
//	if errors.As(err, &list) {
//		for _, p := range list.Problems { ... }
//	}
type ErrorList struct {
	Problems []Problem
}

// Error renders one problem per line.
func (l *ErrorList) Error() string {
	lines := make([]string, len(l.Problems))
	for i, p := range l.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

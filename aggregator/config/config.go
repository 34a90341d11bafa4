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
// are errors. The returned error names the file and lists every problem the
// decoder found, one per line, each with its line number.
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
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, 0, len(te.Errors))
		for _, e := range te.Errors {
			msgs = append(msgs, file+": "+strings.TrimPrefix(e, "yaml: "))
		}
		return errors.New(strings.Join(msgs, "\n"))
	}
	return fmt.Errorf("%s: %s", file, strings.TrimPrefix(err.Error(), "yaml: "))
}

// Errors collects validation problems so a user sees all of them at once.
type Errors []string

// Addf records one problem.
func (e *Errors) Addf(format string, args ...any) { *e = append(*e, fmt.Sprintf(format, args...)) }

// Err returns nil when nothing was recorded, else one error listing all.
func (e Errors) Err() error {
	if len(e) == 0 {
		return nil
	}
	return errors.New(strings.Join(e, "\n"))
}

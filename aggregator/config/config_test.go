package config

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
)

// DecodeStrict returns the decoder's problems as values, each with its
// line parsed once, and renders them as "file: line N: message".
func TestDecodeStrictProblems(t *testing.T) {
	type section struct {
		Size ByteSize `yaml:"size"`
		N    int      `yaml:"n"`
	}
	type doc struct {
		Name    string  `yaml:"name"`
		Section section `yaml:"section"`
	}
	for _, tt := range []struct {
		name string
		yaml string
		want []Problem
	}{
		{"type errors, all of them", "name: x\nsection:\n  n: many\n  bogus: 1\nextra: 2\n", []Problem{
			{File: "f.yaml", Line: 3, Msg: "cannot unmarshal !!str `many` into int"},
			{File: "f.yaml", Line: 4, Msg: "field bogus not found in type config.section"},
			{File: "f.yaml", Line: 5, Msg: "field extra not found in type config.doc"},
		}},
		{"an unmarshaler's error", "section: {size: lots}\n", []Problem{
			{File: "f.yaml", Line: 1, Msg: `invalid size "lots": expected a number with an optional unit such as KiB, MiB, GB`},
		}},
		{"syntax error", "name: x\nsection: [\n", []Problem{
			{File: "f.yaml", Line: 2, Msg: "did not find expected node content"},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var d doc
			err := DecodeStrict("f.yaml", []byte(tt.yaml), &d)
			var list *ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error %v (%T) is not an *ErrorList", err, err)
			}
			if !reflect.DeepEqual(list.Problems, tt.want) {
				t.Errorf("problems:\n%#v\nwant:\n%#v", list.Problems, tt.want)
			}
		})
	}
	// Rendered as before problems were values: one per line, file first.
	var d doc
	err := DecodeStrict("f.yaml", []byte("section:\n  n: many\nextra: 2\n"), &d)
	const want = "f.yaml: line 2: cannot unmarshal !!str `many` into int\n" +
		"f.yaml: line 3: field extra not found in type config.doc"
	if err == nil || err.Error() != want {
		t.Errorf("Error():\n%v\nwant:\n%s", err, want)
	}
	if err := DecodeStrict("f.yaml", nil, &d); err != nil {
		t.Errorf("empty file: %v", err)
	}
}

func TestErrors(t *testing.T) {
	var errs Errors
	if errs.Err() != nil {
		t.Fatal("no problems must be a nil error")
	}
	errs.Add("a.b", "must be %d", 1)

	var section Errors
	section.Add("allowed_lateness", "must not be negative")
	section.Add("[0].name", "is used twice")
	section.Add("", "is empty")
	errs.Append("windows", section.Err())
	errs.Append("", nil)
	errs.Append("state", fmt.Errorf("plain"))
	errs = append(errs, Problem{File: "f.yaml", Line: 3, Column: 7, Msg: "bad"})

	err := errs.Err()
	var list *ErrorList
	if !errors.As(fmt.Errorf("wrapped: %w", err), &list) {
		t.Fatal("not an *ErrorList through %w")
	}
	var paths []string
	for _, p := range list.Problems {
		paths = append(paths, p.Path)
	}
	if want := []string{"a.b", "windows.allowed_lateness", "windows[0].name", "windows", "state", ""}; !reflect.DeepEqual(paths, want) {
		t.Errorf("paths %q, want %q", paths, want)
	}
	const want = "a.b: must be 1\n" +
		"windows.allowed_lateness: must not be negative\n" +
		"windows[0].name: is used twice\n" +
		"windows: is empty\n" +
		"state: plain\n" +
		"f.yaml: line 3, column 7: bad"
	if err.Error() != want {
		t.Errorf("Error():\n%s\nwant:\n%s", err, want)
	}
	// The list is a copy: recording more does not change an error returned.
	errs.Add("later", "x")
	if len(list.Problems) != 6 {
		t.Errorf("%d problems after a later Add", len(list.Problems))
	}
}

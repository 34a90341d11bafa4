package main

import (
	"bytes"
	"strings"
	"testing"
)

func execute(args ...string) (string, error) {
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestCheckConfig(t *testing.T) {
	out, err := execute("check-config", "-c", "../../deploy/outpost.example.yaml")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(out, "config OK, 2 rules enabled") {
		t.Errorf("output: %s", out)
	}
	out, err = execute("check-config", "-c", "testdata/missing.yaml")
	if err == nil || !strings.Contains(out, "reading config") {
		t.Errorf("missing config: err %v, output %s", err, out)
	}
}

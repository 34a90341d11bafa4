package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/outpost-siem/outpost/rules"
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
	set, err := rules.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, fmt.Sprintf("config OK, %d rules enabled", len(set.Rules))) {
		t.Errorf("output: %s", out)
	}
	out, err = execute("check-config", "-c", "testdata/missing.yaml")
	if err == nil || !strings.Contains(out, "reading config") {
		t.Errorf("missing config: err %v, output %s", err, out)
	}
}

package rules_test

import (
	"testing"

	"github.com/outpost-siem/outpost/rules"
	"github.com/outpost-siem/outpost/rules/ruletest"
)

// TestSigmaConformance runs the conformance rules and tests of
// testdata/sigma through the real engine.
func TestSigmaConformance(t *testing.T) {
	set, err := rules.LoadDir("testdata/sigma")
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Tests) == 0 {
		t.Fatal("no tests found")
	}
	for _, tc := range set.Tests {
		t.Run(tc.Name, func(t *testing.T) {
			res := ruletest.Run(set, tc)
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			if res.Diff != "" {
				t.Errorf("%s", res.Diff)
			}
		})
	}
}

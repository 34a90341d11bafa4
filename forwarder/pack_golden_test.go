package forwarder

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-siem/outpost/forwarder/cef"
	"github.com/outpost-siem/outpost/rules"
	"github.com/outpost-siem/outpost/rules/ruletest"
)

var updatePack = flag.Bool("update-pack", false, "rewrite testdata/pack/*.cef from the current output")

// TestShippedRulesCEF renders, for every shipped rule, the alert its first
// positive test case raises through the real engine, and compares the CEF
// with testdata/pack/<rule>.cef. A change to the encoder or to a rule that
// changes what the SIEM receives shows up here as a diff to review.
func TestShippedRulesCEF(t *testing.T) {
	set, err := rules.Pack()
	if err != nil {
		t.Fatal(err)
	}
	enc, err := cef.NewEncoder(cef.Options{Vendor: "Outpost", Product: "Outpost", Version: "test", DeviceExternalID: "outpost-test", DeviceHost: "outpost-test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range set.Rules {
		t.Run(r.ID, func(t *testing.T) {
			var line string
			for _, tc := range set.Tests {
				alerts, err := ruletest.Alerts(set, tc)
				if err != nil {
					t.Fatal(err)
				}
				for _, a := range alerts {
					if a.RuleID == r.ID {
						line = string(enc.Append(nil, a))
						break
					}
				}
				if line != "" {
					break
				}
			}
			if line == "" {
				t.Fatal("no test case of the pack raises this rule")
			}
			path := filepath.Join("testdata", "pack", r.ID+".cef")
			if *updatePack {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(line+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./forwarder -run TestShippedRulesCEF -update-pack)", err)
			}
			if got := strings.TrimSuffix(string(want), "\n"); got != line {
				t.Errorf("CEF changed\n got: %s\nwant: %s", line, got)
			}
		})
	}
}

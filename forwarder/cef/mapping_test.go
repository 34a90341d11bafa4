package cef

import (
	"strings"
	"testing"

	"github.com/outpost-siem/outpost/aggregator/event"
)

func TestRuleMapping(t *testing.T) {
	enc, err := NewEncoder(Options{Vendor: "V", Product: "P", Version: "1"})
	if err != nil {
		t.Fatal(err)
	}
	a := &event.Alert{
		ID: "id1", RuleID: "r", Title: "T", Severity: 5, Kind: "match", Count: 1,
		Fields: map[string]string{"user": "dana", "src_ip": "203.0.113.5"},
		CEF: map[string]string{
			"suser": "dana@contoso.example", // replaces the default user → suser
			"src":   "not an ip",            // replaces, and is validated like the default
			"duser": "eve", "cat": "a=b",
			"cn1": "42", "cn1Label": "attrs.count",
			"cn2": "many", "cn2Label": "attrs.bad", // not an integer: left out
			"msg": "custom message",
			"cs6": "x", "cs6Label": "attrs.resource_id",
		},
	}
	line := string(enc.Append(nil, a))
	for _, want := range []string{
		" suser=dana@contoso.example ", " msg=custom message ",
		" cat=a\\=b ", " cn1Label=attrs.count cn1=42 ", " duser=eve ",
		" cs6Label=attrs.resource_id cs6=x",
	} {
		if !strings.Contains(line+" ", want) {
			t.Errorf("line lacks %q:\n%s", want, line)
		}
	}
	for _, absent := range []string{"src=", "cn2", "suser=dana ", "cs6Label=Fields"} {
		if strings.Contains(line, absent) {
			t.Errorf("line has %q:\n%s", absent, line)
		}
	}
	// The extra keys come in key order, after cs5 and before cs6.
	if i, j := strings.Index(line, " cat="), strings.Index(line, " duser="); i < 0 || j < i {
		t.Errorf("extra keys out of order:\n%s", line)
	}
}

package sigma

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestBase64Offsets(t *testing.T) {
	for in, want := range map[string][]string{
		"http://": {"aHR0cDovL", "h0dHA6Ly", "odHRwOi8v"},
		"cmd":     {"Y21k", "NtZ", "jbW"},
	} {
		if got := base64Offsets(in); !slices.Equal(got, want) {
			t.Errorf("base64offset(%q) = %q, want %q", in, got, want)
		}
	}
	got, err := transform("IEX", []string{"wide", "base64offset"})
	if want := []string{"SQBFAFgA", "kARQBYA", "JAEUAWA"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("wide|base64offset(IEX) = %q, %v, want %q", got, err, want)
	}
}

func TestWindash(t *testing.T) {
	windash := func(s string) []string {
		out, err := windash(s)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if got := windash(" -enc"); len(got) != 5 || got[1] != " /enc" || got[2] != " \u2013enc" {
		t.Errorf("windash(\" -enc\") = %q", got)
	}
	for _, s := range []string{"a-b", "x -", "--"} {
		if got := windash(s); len(got) != 1 || got[0] != s {
			t.Errorf("windash(%q) = %q, want it unchanged", s, got)
		}
	}
	if got := windash("--flag"); len(got) != 5 || got[1] != "-/flag" {
		t.Errorf("windash(\"--flag\") = %q: only the dash before the word varies", got)
	}
	if got := windash("C:/x"); len(got) != 5 {
		t.Errorf("windash(\"C:/x\") = %q", got)
	}
	if got := windash("prüfung -x"); got[1] != "prüfung /x" {
		t.Errorf("windash(\"prüfung -x\") = %q: the rest must stay as it is", got)
	}
}

// A long value expands in time linear in its length (it was quadratic).
func TestWindashLongValue(t *testing.T) {
	long := strings.Repeat("a", 200_000) + " -x"
	start := time.Now()
	out, err := windash(long)
	if err != nil || len(out) != 5 || time.Since(start) > 10*time.Second {
		t.Errorf("windash of 200 kB: %d strings, %v, in %s", len(out), err, time.Since(start))
	}
}

func TestConditionErrors(t *testing.T) {
	ids := []string{"filter", "sel_a", "sel_b", "_hidden"}
	for cond, want := range map[string]string{
		"":                      "empty",
		"sel_a and":             "ends too early",
		"sel_a or (sel_b":       "missing )",
		"sel_a sel_b":           `unexpected "sel_b"`,
		"nosuch":                "not a search identifier",
		"sel_*":                 "needs \"1 of\"",
		"2 of sel_*":            "only \"1 of\"",
		"1 of nomatch_*":        "names no search identifier",
		"sel_a | count() > 5":   "unexpected character",
		"all sel_a":             "must be followed by",
		strings.Repeat("(", 99): "nests deeper",
	} {
		_, err := parseCondition(cond, ids)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseCondition(%q) = %v, want an error with %q", cond, err, want)
		}
	}
	n, err := parseCondition("1 of them and not 1 of _*", ids)
	if err != nil {
		t.Fatal(err)
	}
	and := n.(andNode)
	if got := and.l.(ofNode).names; !slices.Equal(got, []string{"filter", "sel_a", "sel_b"}) {
		t.Errorf("them = %q, want every identifier but _hidden", got)
	}
	if got := and.r.(notNode).x.(ofNode).names; !slices.Equal(got, []string{"_hidden"}) {
		t.Errorf("_* = %q", got)
	}
}

// parseDoc parses one YAML document.
func parseDoc(t testing.TB, src string) *yaml.Node {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Content[0]
}

func plainField(f string) (string, error) {
	if f == "Unmapped" {
		return "", errors.New("not mapped")
	}
	return `attrs["` + f + `"]`, nil
}

func TestTranslateErrors(t *testing.T) {
	head := "title: t\nlogsource: {product: linux}\ndetection:\n"
	for body, want := range map[string]string{
		"  sel: {a|bogus: x}\n  condition: sel":               `unknown modifier "bogus"`,
		"  sel: {a|re: '(unclosed'}\n  condition: sel":        "does not compile",
		"  sel: {a|cidr: 10.0.0.0/99}\n  condition: sel":      "CIDR prefix",
		"  sel: {a|gt: many}\n  condition: sel":               "takes a number",
		"  sel: {a|base64: 'x*'}\n  condition: sel":           "wildcards cannot be encoded",
		"  sel: {a|base64offset: x}\n  condition: sel":        "needs contains",
		"  sel: {a|contains|startswith: x}\n  condition: sel": "cannot be combined",
		"  sel: {Unmapped: x}\n  condition: sel":              "not mapped",
		"  sel: {a|expand: 'C:\\%dir%'}\n  condition: sel":    "placeholder",
		"  sel: {a: x}":                                                                  "condition: required",
		"  sel: {a: x}\n  condition: other":                                              "not a search identifier",
		"  sel: {a|windash: '-a -b -c -d'}\n  condition: sel":                            "more than 256",
		"  sel: []\n  condition: sel":                                                    "empty list",
		"  sel: {a|i: x}\n  condition: sel":                                              "apply to re only",
		"  sel: {a: x}\n  condition: sel | max(a) > 3\n  timeframe: 1m":                  "only count()",
		"  sel: {a: x}\n  condition: sel | count() > 99999999999999999\n  timeframe: 1m": "a whole number from 0 to",
		"  sel: {a: x, a: y}\n  condition: sel":                                          "appears twice in one map",
		"  sel: {a|utf16le|cased: x}\n  condition: sel":                                  "only before base64",
		"  sel: {a: '" + strings.Repeat("?", 33) + "'}\n  condition: sel":                "? wildcards",
		"  sel: {a: '" + strings.Repeat("x", 5000) + "'}\n  condition: sel":              "more than 4096",
		"  sel: {a|contains: [" + strings.Repeat("'-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx', ", 999) + "'y']}\n  condition: " + strings.Repeat("sel or ", 200) + "sel": "more than 262144 bytes",
	} {
		r, err := Parse(parseDoc(t, head+body))
		if err == nil {
			_, err = r.Translate(plainField)
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s\n  -> %v, want an error with %q", body, err, want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for src, want := range map[string]string{
		"title: t\naction: global\nlogsource: {product: linux}\n":                                        "v1 rule collections",
		"logsource: {product: linux}\ndetection: {sel: {a: b}, condition: sel}":                          "title: required",
		"title: t\nstatus: done\nlogsource: {product: linux}\ndetection: {sel: {a: b}, condition: sel}":  "status",
		"title: t\nlevel: urgent\nlogsource: {product: linux}\ndetection: {sel: {a: b}, condition: sel}": "level",
		"title: t\nlogsource: linux\ndetection: {sel: {a: b}, condition: sel}":                           "logsource",
	} {
		if _, err := Parse(parseDoc(t, src)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q -> %v, want an error with %q", src, err, want)
		}
	}
}

func TestAggregation(t *testing.T) {
	a, err := parseAggregation(" count(user) by src_ip, host >= 5")
	if err != nil || a.Field != "user" || !slices.Equal(a.GroupBy, []string{"src_ip", "host"}) || a.Op != ">=" || a.N != 5 {
		t.Errorf("got %+v, %v", a, err)
	}
	a, err = parseAggregation("count() > 10")
	if err != nil || a.Field != "" || a.GroupBy != nil || a.Op != ">" || a.N != 10 {
		t.Errorf("got %+v, %v", a, err)
	}
}

// FuzzCondition: the condition parser never panics, and what it accepts
// translates.
func FuzzCondition(f *testing.F) {
	for _, s := range []string{"sel", "sel and not filter", "1 of sel_* or all of them", "(a or b) and not (c)", "all of _x*", "not not a"} {
		f.Add(s)
	}
	ids := []string{"a", "b", "c", "filter", "sel", "sel_1", "sel_2", "_x1"}
	f.Fuzz(func(t *testing.T, cond string) {
		n, err := parseCondition(cond, ids)
		if err != nil {
			return
		}
		c := &compiler{field: plainField, searches: map[string]*yaml.Node{}, done: map[string]string{}}
		for _, id := range ids {
			c.searches[id] = &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
				{Kind: yaml.ScalarNode, Value: id}, {Kind: yaml.ScalarNode, Value: "x", Tag: "!!str"}}}
		}
		if _, err := c.node(n); err != nil {
			t.Fatalf("%q parsed but does not translate: %v", cond, err)
		}
	})
}

// FuzzRule: any YAML document either is refused with an error or
// translates; nothing panics.
func FuzzRule(f *testing.F) {
	f.Add("title: t\nlogsource: {product: linux}\ndetection:\n  sel: {a|contains|all: [x, y]}\n  condition: sel\n")
	f.Add("title: t\nlogsource: {product: azure}\ndetection:\n  k: [one, two]\n  s: {b|base64offset|contains: abc}\n  condition: 1 of them\n")
	f.Add("title: t\nlogsource: {product: linux}\ndetection:\n  - a\n")
	f.Fuzz(func(t *testing.T, src string) {
		dec := yaml.NewDecoder(bytes.NewReader([]byte(src)))
		for range 4 {
			var doc yaml.Node
			if err := dec.Decode(&doc); err != nil {
				if errors.Is(err, io.EOF) {
					return
				}
				return
			}
			if len(doc.Content) == 0 || !Is(doc.Content[0]) || IsCorrelation(doc.Content[0]) {
				continue
			}
			r, err := Parse(doc.Content[0])
			if err != nil {
				continue
			}
			_, _ = r.Translate(plainField)
		}
	})
}

package rules

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/expr-lang/expr/vm"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// checkPrefilter fails if a rule the index routes ev to matches it but is
// not among its candidates.
func checkPrefilter(t *testing.T, set *Set, ev *event.Event) (matched int) {
	t.Helper()
	var v vm.VM
	var sc Scratch
	cands := set.Candidates(ev, &sc)
	for _, r := range set.For(ev) {
		hits, _, err := r.Evaluate(&v, ev, nil)
		if err != nil || len(hits) == 0 {
			continue
		}
		matched++
		if !slices.Contains(cands, r) {
			t.Fatalf("rule %s matches %+v but the prefilter left it out", r.ID, ev)
		}
	}
	return matched
}

func TestPrefilterKeepsEveryMatchingRule(t *testing.T) {
	var b strings.Builder
	b.WriteString("rules:\n")
	words := []string{"Failed password", "session opened", "GET /admin", "kex_exchange", "Invalid user", "CONNECT"}
	for i, w := range words {
		fmt.Fprintf(&b, "  - {id: r%d, title: T, kind: match, severity: 1, condition: %s}\n", i,
			strconv.Quote(fmt.Sprintf(`source == "syslog" and (like(message, "*%s*") or like(attrs["x"], "%s*"))`, w, strings.ToUpper(w))))
		fmt.Fprintf(&b, "  - {id: c%d, title: T, kind: match, severity: 1, condition: %s}\n", i,
			strconv.Quote(fmt.Sprintf(`source == "syslog" and like_cased(message, "*%s*")`, w)))
		fmt.Fprintf(&b, "  - {id: x%d, title: T, kind: match, severity: 1, condition: %s}\n", i,
			strconv.Quote(fmt.Sprintf(`source == "syslog" and message matches "(?i)%s"`, w)))
	}
	b.WriteString("  - {id: n, title: T, kind: match, severity: 1, condition: 'source == \"syslog\" and user != \"\"'}\n")
	set, err := LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(b.String())}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	matched := 0
	for _, msg := range []string{"sshd: Failed password for root", "FAILED PASSWORD", "pam: session opened for x", "\u212aex_exchange", "nothing here", "connect CONNECT kex_exchange"} {
		for _, ev := range []*event.Event{
			{Source: "syslog", Message: msg},
			{Source: "syslog", Message: msg, User: "u", Attrs: map[string]string{"x": strings.ToUpper(msg)}},
		} {
			matched += checkPrefilter(t, set, ev)
		}
	}
	if matched < 10 {
		t.Fatalf("only %d matches: the test tests little", matched)
	}
	// And the prefilter does leave rules out.
	var sc Scratch
	if n := len(set.Candidates(&event.Event{Source: "syslog", Message: "nothing here"}, &sc)); n >= len(set.Rules) {
		t.Errorf("nothing was left out for an event holding no literal (%d of %d)", n, len(set.Rules))
	}
}

// FuzzPrefilter: for any patterns and message, every rule that matches is
// a candidate.
func FuzzPrefilter(f *testing.F) {
	f.Add("*Failed*", "abc?def", "(?i)kex.*closed", "Failed password abcXdef KEX closed")
	f.Add("a*b*c", `x\*y`, "ab|cd", "zzabzzcz x*y cd")
	f.Add("*\u2013flag*", "*İx*", "(?i)kex", "\u2013FLAG \u0130X \u212aEX")
	f.Fuzz(func(t *testing.T, p1, p2, re, msg string) {
		if len(p1)+len(p2)+len(re) > 120 || len(msg) > 256 {
			return
		}
		var b strings.Builder
		b.WriteString("rules:\n")
		for i, cond := range []string{
			fmt.Sprintf(`like(message, %s)`, strconv.Quote(p1)),
			fmt.Sprintf(`like_cased(message, %s) or like(attrs["x"], %s)`, strconv.Quote(p2), strconv.Quote(p1)),
			fmt.Sprintf(`message matches %s and like(message, %s)`, strconv.Quote(re), strconv.Quote(p2)),
			fmt.Sprintf(`attrs["x"] matches %s`, strconv.Quote(re)),
		} {
			fmt.Fprintf(&b, "  - {id: r%d, title: T, kind: match, severity: 1, condition: %s}\n", i, strconv.Quote(`source == "syslog" and (`+cond+`)`))
		}
		set, err := LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(b.String())}}, ".")
		if err != nil {
			return
		}
		for _, ev := range []*event.Event{
			{Source: "syslog", Message: msg},
			{Source: "syslog", Attrs: map[string]string{"x": msg}},
			{Source: "syslog", Message: msg, Attrs: map[string]string{"x": strings.ToUpper(msg)}},
		} {
			checkPrefilter(t, set, ev)
		}
	})
}

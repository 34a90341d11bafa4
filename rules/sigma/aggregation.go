package sigma

import (
	"fmt"
	"strconv"
	"strings"
)

// Aggregation is the older aggregation a condition may end with, still
// found in shipped rules:
//
//	selection | count() by src > 10
//	selection | count(user) by src >= 5
//
// over the rule's `timeframe`. Outpost runs `count()` as a threshold rule
// and `count(field)` as a distinct rule.
type Aggregation struct {
	Field   string   // count(field): distinct values of it; "" counts events
	GroupBy []string // by a, b
	Op      string   // >, >=, <, <=, ==
	N       int
}

// parseAggregation parses what follows the condition's `|`.
func parseAggregation(s string) (*Aggregation, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, "count(")
	if !ok {
		name, _, _ := strings.Cut(s, "(")
		return nil, fmt.Errorf("aggregation %q: only count() is supported, not %s", s, strings.TrimSpace(name))
	}
	field, rest, ok := strings.Cut(rest, ")")
	if !ok {
		return nil, fmt.Errorf("aggregation %q: missing )", s)
	}
	a := &Aggregation{Field: strings.TrimSpace(field)}
	rest = strings.TrimSpace(rest)
	if by, ok := cutWord(rest, "by"); ok {
		i := strings.IndexAny(by, "<>=!")
		if i < 0 {
			return nil, fmt.Errorf("aggregation %q: expected a comparison after by", s)
		}
		for _, f := range strings.Split(by[:i], ",") {
			if f = strings.TrimSpace(f); f == "" {
				return nil, fmt.Errorf("aggregation %q: an empty group-by field", s)
			}
			a.GroupBy = append(a.GroupBy, f)
		}
		rest = by[i:]
	}
	for _, op := range []string{">=", "<=", "==", ">", "<", "="} {
		if num, ok := strings.CutPrefix(rest, op); ok {
			n, err := strconv.Atoi(strings.TrimSpace(num))
			if err != nil || n < 0 || n > MaxCount {
				return nil, fmt.Errorf("aggregation %q: expected a whole number from 0 to %d after %s", s, MaxCount, op)
			}
			if op == "=" {
				op = "=="
			}
			a.Op, a.N = op, n
			return a, nil
		}
	}
	return nil, fmt.Errorf("aggregation %q: expected a comparison (>, >=, <, <=, ==) and a number", s)
}

// cutWord cuts word (and the space around it) from the start of s.
func cutWord(s, word string) (string, bool) {
	if len(s) > len(word) && strings.EqualFold(s[:len(word)], word) && (s[len(word)] == ' ' || s[len(word)] == '\t') {
		return strings.TrimSpace(s[len(word):]), true
	}
	return "", false
}

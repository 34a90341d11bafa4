package rules

import (
	"math"
	"regexp"
	"strconv"
	"testing"
)

func TestLike(t *testing.T) {
	cases := []struct {
		v, p  string
		cased bool
		want  bool
	}{
		{"Failed password", "failed password", false, true},
		{"Failed password", "failed password", true, false},
		{"Failed password for root", "*PASSWORD*", false, true},
		{"Failed password for root", "failed*", false, true},
		{"Failed password for root", "*root", false, true},
		{"Failed password for root", "*roo", false, false},
		{"abc", "a?c", false, true},
		{"aéc", "a?c", false, true}, // ? is one character, not one byte
		{"ac", "a?c", false, false},
		{"a*c", `a\*c`, false, true},
		{"abc", `a\*c`, false, false},
		{"a?c", `a\?c`, false, true},
		{"abc", `a\?c`, false, false},
		{`C:\Windows\System32`, `c:\windows\system32`, false, true}, // a lone backslash is itself
		{`C:\Windows\System32`, `c:\windows\\*`, false, true},       // a backslash, then the wildcard
		{`C:\Windows\System32`, `c:\windows\*`, false, false},       // an escaped *: literal
		{`a\b`, `a\\b`, false, true},                                // \\ is one backslash
		{`a\xyz`, `a\\*`, false, true},                              // a backslash, then the wildcard
		{"", "", false, true},
		{"", "*", false, true},
		{"x", "", false, false},
		{"aXbXc", "*x*x*", false, true},
		{"abcabd", "*abd", false, true},
		{"abcab", "a*b*b", false, true},
		{"ab", "a*b*b", false, false},
		{"ÄRGER", "*ärger*", false, true}, // non-ASCII pattern: Unicode folding
		{"ärger", "*ÄRGER*", true, false},
	}
	for _, c := range cases {
		if got := likeMatch(c.v, c.p, c.cased); got != c.want {
			t.Errorf("like(%q, %q, cased=%v) = %v, want %v", c.v, c.p, c.cased, got, c.want)
		}
	}
}

func TestNum(t *testing.T) {
	for in, want := range map[string]float64{"42": 42, " 4.5 ": 4.5, "-3": -3} {
		if got, _ := fnNum(in); got.(float64) != want {
			t.Errorf("num(%q) = %v, want %v", in, got, want)
		}
	}
	if got, _ := fnNum("4625x"); !math.IsNaN(got.(float64)) {
		t.Errorf("num of a non-number = %v, want NaN", got)
	}
}

// FuzzLike checks the byte matcher against the regular expression the same
// pattern renders to.
func FuzzLike(f *testing.F) {
	for _, s := range [][2]string{{"Failed password", "*pass*"}, {`a\b`, `a\\b`}, {"abc", "a?c"}, {"x*y", `x\*y`}, {"aéc", "a?c"}, {"abcab", "a*b*b"}} {
		f.Add(s[0], s[1], false)
	}
	f.Fuzz(func(t *testing.T, v, p string, cased bool) {
		if !isASCII(p) || len(p) > 64 || len(v) > 256 {
			return
		}
		got := parseLike(p, !cased).match(v)
		want := regexp.MustCompile(likeRegexp(p, cased)).MatchString(v)
		if got != want {
			t.Fatalf("like(%q, %q, cased=%v) = %v, the regexp says %v", v, p, cased, got, want)
		}
	})
}

// Patterns that come from events do not grow the cache without bound.
func TestLikeCacheIsBounded(t *testing.T) {
	for i := range maxLikeCache + 500 {
		likeMatch("x", "pattern-from-an-event-"+strconv.Itoa(i), false)
	}
	if n := likeCacheSize.Load(); n > maxLikeCache {
		t.Errorf("the cache holds %d patterns, more than %d", n, maxLikeCache)
	}
	if !likeMatch("pattern-from-an-event-99999", "*-99999", false) {
		t.Error("a pattern not cached is still matched")
	}
}

func TestCIDRZonesAndBoundedCache(t *testing.T) {
	if got, _ := fnCIDR("fe80::1%eth0", "fe80::/10"); got != true {
		t.Error("a zoned link-local address is not in fe80::/10")
	}
	for i := range maxLikeCache + 100 {
		_, _ = fnCIDR("10.0.0.1", "10."+strconv.Itoa(i/256)+"."+strconv.Itoa(i%256)+".0/24")
	}
	if n := prefixCacheSize.Load(); n > maxLikeCache {
		t.Errorf("the prefix cache holds %d, more than %d", n, maxLikeCache)
	}
}

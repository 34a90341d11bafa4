package rules

import (
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// A like pattern is Sigma's wildcard string: `*` matches any run of
// characters, `?` exactly one, and a backslash makes the `*`, `?` or `\`
// after it literal (a backslash before anything else is itself). like()
// compares without regard to case, like_cased() exactly.
//
// ASCII patterns are matched byte by byte with ASCII case folding (a
// non-ASCII character of the value never equals an ASCII one of the
// pattern, so little Unicode folding is lost), `?` taking one UTF-8
// character; a pattern with non-ASCII characters and no regard to case is
// matched with the pattern and the value lowercased (Unicode).

// likePattern is a compiled pattern: literal segments split at `*`, each
// holding `?` as wild bytes (wild[i] says which).
type likePattern struct {
	segs   []likeSeg
	lead   bool // starts with *
	trail  bool // ends with *
	folded bool // compare with ASCII case folding
	lower  bool // a non-ASCII pattern, lowercased: lowercase the value too
}

type likeSeg struct {
	lit  []byte
	wild []bool // lit[i] is `?`
	// plain: no `?` in lit, so the segment can be searched for with
	// indexFold rather than tried at every position.
	plain bool
}

// parseLike splits a Sigma wildcard string into its parts: the literal runs
// between `*`, with `?` positions marked.
func parseLike(p string, folded bool) *likePattern {
	lp := &likePattern{folded: folded}
	var cur likeSeg
	flush := func() {
		cur.plain = !slices.Contains(cur.wild, true)
		lp.segs = append(lp.segs, cur)
		cur = likeSeg{}
	}
	add := func(b byte, wild bool) {
		if folded && 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		cur.lit = append(cur.lit, b)
		cur.wild = append(cur.wild, wild)
	}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '\\':
			if i+1 < len(p) && (p[i+1] == '*' || p[i+1] == '?' || p[i+1] == '\\') {
				i++
				add(p[i], false)
			} else {
				add('\\', false)
			}
		case '*':
			if i == 0 {
				lp.lead = true
			}
			flush()
			if i == len(p)-1 {
				lp.trail = true
			}
		case '?':
			add('?', true)
		default:
			add(c, false)
		}
	}
	flush()
	return lp
}

// likeRegexp renders p as an anchored regular expression.
func likeRegexp(p string, cased bool) string {
	var b strings.Builder
	if !cased {
		b.WriteString("(?i)")
	}
	b.WriteString("(?s)^")
	lit := func(s string) { b.WriteString(regexp.QuoteMeta(s)) }
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '\\':
			if i+1 < len(p) && (p[i+1] == '*' || p[i+1] == '?' || p[i+1] == '\\') {
				i++
				lit(p[i : i+1])
			} else {
				lit(`\`)
			}
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			_, n := utf8.DecodeRuneInString(p[i:])
			lit(p[i : i+n])
			i += n - 1
		}
	}
	b.WriteString("$")
	return b.String()
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// compileLike compiles p; cased keeps case.
func compileLike(p string, cased bool) *likePattern {
	if !cased && !isASCII(p) {
		// Unicode letters: both sides lowercased (which folds the Kelvin
		// sign to k, too), then compared exactly.
		lp := parseLike(strings.ToLower(p), false)
		lp.lower = true
		return lp
	}
	return parseLike(p, !cased)
}

// match reports whether v matches the whole pattern.
func (lp *likePattern) match(v string) bool {
	if lp.lower {
		v = strings.ToLower(v)
	}
	segs := lp.segs
	// A pattern without `*` is one segment that must span v.
	if len(segs) == 1 {
		n, ok := lp.segAt(segs[0], v, 0)
		return ok && n == len(v)
	}
	pos := 0
	// The first segment is anchored at the start unless the pattern
	// begins with `*` (then it is empty).
	n, ok := lp.segAt(segs[0], v, 0)
	if !ok {
		return false
	}
	pos = n
	last := segs[len(segs)-1]
	for _, s := range segs[1 : len(segs)-1] {
		if len(s.lit) == 0 {
			continue
		}
		if s.plain {
			i := lp.index(v[pos:], s.lit)
			if i < 0 {
				return false
			}
			pos += i + len(s.lit)
			continue
		}
		found := false
		for start := pos; start <= len(v); start++ {
			if end, ok := lp.segAt(s, v, start); ok {
				pos, found = end, true
				break
			}
		}
		if !found {
			return false
		}
	}
	// The last segment is anchored at the end: try the positions from the
	// end (a `?` may take a multi-byte character, so its length in bytes
	// is not fixed).
	if len(last.lit) == 0 {
		return true
	}
	for start := len(v); start >= pos; start-- {
		if end, ok := lp.segAt(last, v, start); ok && end == len(v) {
			return true
		}
	}
	return false
}

// index returns the first index of lit (lowercase when folded) in v, or -1.
func (lp *likePattern) index(v string, lit []byte) int {
	if !lp.folded {
		return strings.Index(v, string(lit))
	}
	return indexFold(v, lit)
}

// indexFold is strings.Index with ASCII case folding, for a lowercase lit:
// it jumps between the places where lit's first byte occurs, in either
// case, with IndexByte.
func indexFold(v string, lit []byte) int {
	if len(lit) == 0 {
		return 0
	}
	c0 := lit[0]
	up := c0
	if 'a' <= c0 && c0 <= 'z' {
		up = c0 - ('a' - 'A')
	}
	for i := 0; i+len(lit) <= len(v); {
		j := strings.IndexByte(v[i:], c0)
		if up != c0 {
			if k := strings.IndexByte(v[i:], up); k >= 0 && (j < 0 || k < j) {
				j = k
			}
		}
		if j < 0 {
			return -1
		}
		i += j
		if i+len(lit) > len(v) {
			return -1
		}
		if equalFoldASCII(v[i:i+len(lit)], lit) {
			return i
		}
		i++
	}
	return -1
}

// equalFoldASCII reports whether v equals the lowercase lit, folding v's
// ASCII letters.
func equalFoldASCII(v string, lit []byte) bool {
	for k := range len(lit) {
		b := v[k]
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if b != lit[k] {
			return false
		}
	}
	return true
}

// segAt matches segment s at v[start:] and returns where it ends.
func (lp *likePattern) segAt(s likeSeg, v string, start int) (int, bool) {
	i := start
	for k, c := range s.lit {
		if i >= len(v) {
			return 0, false
		}
		if s.wild[k] {
			_, n := utf8.DecodeRuneInString(v[i:])
			i += n
			continue
		}
		b := v[i]
		if lp.folded && 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if b != c {
			return 0, false
		}
		i++
	}
	return i, true
}

// likeCache holds compiled patterns by (cased, pattern). Rule conditions
// mostly use constants; a condition whose pattern comes from the event
// (like(message, user)) would fill it with what senders write, so it holds
// at most maxLikeCache patterns and compiles the rest each time.
var (
	likeCache     sync.Map
	likeCacheSize atomic.Int64
)

const maxLikeCache = 10_000

type likeKey struct {
	p     string
	cased bool
}

func likeMatch(v, p string, cased bool) bool {
	k := likeKey{p, cased}
	if c, ok := likeCache.Load(k); ok {
		return c.(*likePattern).match(v)
	}
	lp := compileLike(p, cased)
	if likeCacheSize.Load() < maxLikeCache {
		if _, loaded := likeCache.LoadOrStore(k, lp); !loaded {
			likeCacheSize.Add(1)
		}
	}
	return lp.match(v)
}

func fnLike(params ...any) (any, error) {
	return likeMatch(params[0].(string), params[1].(string), false), nil
}

func fnLikeCased(params ...any) (any, error) {
	return likeMatch(params[0].(string), params[1].(string), true), nil
}

// fnNum reads a number from a string field: its value, or NaN (which no
// comparison holds for) when it is not one.
func fnNum(params ...any) (any, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(params[0].(string)), 64)
	if err != nil {
		return math.NaN(), nil
	}
	return f, nil
}

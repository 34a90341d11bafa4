package sigma

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"

	"go.yaml.in/yaml/v3"
)

// A search identifier is
//
//	a mapping        field[|modifier...]: value or list of values, all of them (AND)
//	a list of maps   any of the mappings (OR)
//	a list of values keywords: any of them in the message (full-text)
//	a value          one keyword
//
// A list of values is any of them, or all of them with `|all`. Values
// match the whole field, without regard to case, with the wildcards `*`
// and `?` (a backslash makes the next `*`, `?` or `\` literal); `null`
// matches a field that is absent (or empty: Outpost does not tell them
// apart).

// Limits that keep one rule from costing every event much: a rule file is
// input too.
const (
	maxValues       = 1000 // values of one field
	maxVariants     = 256  // strings one value expands to (windash, base64offset)
	maxValueBytes   = 4096 // one value
	maxOneWildcards = 32   // ? wildcards in one value
	// MaxConditionBytes bounds a detection's translated condition (and
	// each part of it as it is built): a rule file is input too.
	MaxConditionBytes = 256 << 10
)

// modifiers the specification defines, by what they do.
var (
	transformMods = []string{"base64", "base64offset", "utf16le", "utf16be", "utf16", "wide", "windash"}
	matchMods     = []string{"contains", "startswith", "endswith", "re", "cidr", "gt", "gte", "lt", "lte", "exists", "fieldref"}
	flagMods      = []string{"all", "cased", "expand", "neq", "i", "ignorecase", "m", "multiline", "s", "dotall"}
)

func (c *compiler) searchNode(name string, n *yaml.Node) (string, error) {
	switch n.Kind {
	case yaml.MappingNode:
		return c.mapping(name, n)
	case yaml.SequenceNode:
		if len(n.Content) == 0 {
			return "", errorf(n.Line, "detection.%s: an empty list", name)
		}
		if n.Content[0].Kind == yaml.MappingNode {
			var parts []string
			for _, m := range n.Content {
				if m.Kind != yaml.MappingNode {
					return "", errorf(m.Line, "detection.%s: a list mixing maps and values", name)
				}
				s, err := c.mapping(name, m)
				if err != nil {
					return "", err
				}
				if s != "" { // "": every item dropped by a pipeline
					parts = append(parts, "("+s+")")
				}
			}
			return strings.Join(parts, " or "), nil
		}
		return c.item(name, "", nil, n)
	case yaml.ScalarNode:
		return c.item(name, "", nil, n)
	case yaml.AliasNode:
		return "", errorf(n.Line, "detection.%s: YAML aliases are not supported", name)
	}
	return "", errorf(n.Line, "detection.%s: expected a map, a list or a value", name)
}

func (c *compiler) mapping(name string, m *yaml.Node) (string, error) {
	if len(m.Content) == 0 {
		return "", errorf(m.Line, "detection.%s: an empty map", name)
	}
	var parts []string
	seen := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if seen[k.Value] {
			return "", errorf(k.Line, "detection.%s: %q appears twice in one map", name, k.Value)
		}
		seen[k.Value] = true
		field, mods, _ := strings.Cut(k.Value, "|")
		var ms []string
		if mods != "" {
			ms = strings.Split(mods, "|")
		}
		s, err := c.item(name, field, ms, v)
		if err != nil {
			return "", err
		}
		if s != "" {
			parts = append(parts, "("+s+")")
		}
	}
	return strings.Join(parts, " and "), nil
}

// ErrDropped is what a Resolver returns for a field whose detection items
// a pipeline drops (drop_detection_item): the item leaves the detection,
// and a search identifier left empty leaves the condition.
var ErrDropped = errors.New("dropped by a pipeline")

// value is one value as written: a string (Sigma's wildcard syntax), or
// null.
type value struct {
	s    string
	null bool
	line int
}

func values(n *yaml.Node) ([]value, error) {
	one := func(n *yaml.Node) (value, error) {
		if n.Kind != yaml.ScalarNode {
			return value{}, errorf(n.Line, "expected a value, or a list of values")
		}
		if n.Tag == "!!null" {
			return value{null: true, line: n.Line}, nil
		}
		return value{s: n.Value, line: n.Line}, nil
	}
	if n.Kind == yaml.SequenceNode {
		if len(n.Content) == 0 {
			return nil, errorf(n.Line, "an empty list of values")
		}
		if len(n.Content) > maxValues {
			return nil, errorf(n.Line, "%d values, more than %d", len(n.Content), maxValues)
		}
		out := make([]value, 0, len(n.Content))
		for _, e := range n.Content {
			v, err := one(e)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	v, err := one(n)
	return []value{v}, err
}

// item translates one field (or, with field "", keywords) and its values.
func (c *compiler) item(name, field string, mods []string, n *yaml.Node) (string, error) {
	where := "detection." + name
	if field != "" {
		where += "." + field
	}
	bad := func(line int, format string, args ...any) error {
		return errorf(line, "%s: %s", where, fmt.Sprintf(format, args...))
	}
	vals, err := values(n)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return "", bad(e.Line, "%s", e.Msg)
		}
		return "", err
	}
	// Sort the modifiers into what they are; order matters among the
	// transformations only.
	var transforms []string
	match, position := "", "" // position: contains, startswith or endswith
	var all, cased, expand, neq bool
	reFlags := ""
	for _, m := range mods {
		switch {
		case slices.Contains(transformMods, m):
			transforms = append(transforms, m)
		case m == "contains" || m == "startswith" || m == "endswith":
			if position != "" {
				return "", bad(n.Line, "modifiers %q and %q cannot be combined", position, m)
			}
			position = m
		case slices.Contains(matchMods, m):
			if match != "" {
				return "", bad(n.Line, "modifiers %q and %q cannot be combined", match, m)
			}
			match = m
		case m == "neq":
			neq = true
		case m == "all":
			all = true
		case m == "cased":
			cased = true
		case m == "expand":
			expand = true
		case m == "i" || m == "ignorecase":
			reFlags += "i"
		case m == "m" || m == "multiline":
			reFlags += "m"
		case m == "s" || m == "dotall":
			reFlags += "s"
		default:
			return "", bad(n.Line, "unknown modifier %q (Outpost supports: %s)", m,
				strings.Join(slices.Concat(matchMods, transformMods, flagMods), ", "))
		}
	}
	if reFlags != "" && match != "re" {
		return "", bad(n.Line, "the modifiers i, m and s apply to re only")
	}
	switch {
	case position == "":
	case match == "re":
		position = "" // a regular expression is searched for anywhere already
	case match != "" && match != "fieldref":
		return "", bad(n.Line, "modifiers %q and %q cannot be combined", position, match)
	}
	if slices.Contains(transforms, "base64offset") && position != "contains" {
		return "", bad(n.Line, "base64offset needs contains after it (its strings are fragments of the encoding)")
	}
	acc := "message"
	if field != "" {
		if acc, err = c.field(field); errors.Is(err, ErrDropped) {
			return "", nil // a pipeline's drop_detection_item
		} else if err != nil {
			return "", bad(n.Line, "%v", err)
		}
	} else if match == "" && position == "" {
		position = "contains" // keywords are full-text search
	}
	var parts []string
	for _, v := range vals {
		s, err := c.value(acc, v, transforms, match, position, cased, expand, reFlags)
		if err != nil {
			return "", bad(v.line, "%v", err)
		}
		parts = append(parts, s)
	}
	op := " or "
	if all {
		op = " and "
	}
	out := parts[0]
	if len(parts) > 1 {
		out = "(" + strings.Join(parts, ")"+op+"(") + ")"
	}
	if len(out) > MaxConditionBytes {
		return "", bad(n.Line, "translates to more than %d bytes of condition", MaxConditionBytes)
	}
	if neq {
		// v2.1: the field is none of the values (an absent one too).
		out = "not (" + out + ")"
	}
	return out, nil
}

// value translates one value of a field under its modifiers.
func (c *compiler) value(acc string, v value, transforms []string, match, position string, cased, expand bool, reFlags string) (string, error) {
	if v.null {
		if len(transforms) > 0 || match != "" || position != "" {
			return "", fmt.Errorf("null takes no modifiers")
		}
		return acc + ` == ""`, nil
	}
	switch match {
	case "exists":
		b, err := strconv.ParseBool(v.s)
		if err != nil || len(transforms) > 0 {
			return "", fmt.Errorf("exists takes true or false and no other modifier")
		}
		if b {
			return acc + ` != ""`, nil
		}
		return acc + ` == ""`, nil
	case "gt", "gte", "lt", "lte":
		f, err := strconv.ParseFloat(v.s, 64)
		if err != nil || len(transforms) > 0 {
			return "", fmt.Errorf("%s takes a number and no other modifier, got %q", match, v.s)
		}
		op := map[string]string{"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[match]
		return fmt.Sprintf("num(%s) %s %s", acc, op, strconv.FormatFloat(f, 'g', -1, 64)), nil
	case "cidr":
		p, err := netip.ParsePrefix(v.s)
		if err != nil || len(transforms) > 0 {
			return "", fmt.Errorf("cidr takes a CIDR prefix and no other modifier, got %q", v.s)
		}
		return fmt.Sprintf("cidr(%s, %s)", acc, strconv.Quote(p.String())), nil
	case "fieldref":
		if len(transforms) > 0 {
			return "", fmt.Errorf("fieldref takes no other modifier")
		}
		other, err := c.field(v.s)
		if err != nil {
			return "", fmt.Errorf("fieldref: %v", err)
		}
		// Two absent fields are not equal values.
		a, o := acc, other
		if !cased {
			a, o = "lower("+acc+")", "lower("+other+")"
		}
		op := map[string]string{"": "==", "contains": "contains", "startswith": "startsWith", "endswith": "endsWith"}[position]
		return fmt.Sprintf(`%s != "" and %s != "" and %s %s %s`, acc, other, a, op, o), nil
	case "re":
		if len(transforms) > 0 {
			return "", fmt.Errorf("re takes no transformation")
		}
		re := v.s
		if reFlags != "" {
			re = "(?" + reFlags + ")" + re
		}
		if _, err := regexp.Compile(re); err != nil {
			return "", fmt.Errorf("re: %q does not compile as a Go (RE2) regular expression: %v", v.s, err)
		}
		return fmt.Sprintf("%s matches %s", acc, strconv.Quote(re)), nil
	}
	if expand {
		name, ok := placeholder(v.s)
		if !ok || len(transforms) > 0 || match != "" || position != "" {
			return "", fmt.Errorf("expand: only a whole value that is one placeholder (%%name%%) without other modifiers is supported, got %q", v.s)
		}
		return fmt.Sprintf("in_list(%s, %s)", strconv.Quote(name), acc), nil
	}
	if len(v.s) > maxValueBytes {
		return "", fmt.Errorf("a value of %d bytes, more than %d", len(v.s), maxValueBytes)
	}
	if strings.Count(v.s, "?") > maxOneWildcards {
		return "", fmt.Errorf("more than %d ? wildcards in one value (each multiplies the cost of matching it)", maxOneWildcards)
	}
	for i, t := range transforms {
		if strings.HasPrefix(t, "utf16") || t == "wide" {
			if i+1 >= len(transforms) || !strings.HasPrefix(transforms[i+1], "base64") {
				return "", fmt.Errorf("%s: only before base64 or base64offset (log fields are UTF-8 text)", t)
			}
		}
	}
	variants, err := transform(v.s, transforms)
	if err != nil {
		return "", err
	}
	fn := "like"
	if cased {
		fn = "like_cased"
	}
	var parts []string
	for _, p := range variants {
		// A lone backslash at the end is a literal backslash; written
		// before a wildcard it would escape it.
		if position == "contains" || position == "startswith" {
			p = closeBackslash(p)
		}
		switch position {
		case "contains":
			p = "*" + p + "*"
		case "startswith":
			p += "*"
		case "endswith":
			p = "*" + p
		}
		if cased && !hasWildcards(p) {
			parts = append(parts, fmt.Sprintf("%s == %s", acc, strconv.Quote(unescape(p))))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s(%s, %s)", fn, acc, strconv.Quote(p)))
	}
	if len(parts) == 1 {
		return parts[0], nil
	}
	return "(" + strings.Join(parts, " or ") + ")", nil
}

// placeholder returns name if s is `%name%`.
func placeholder(s string) (string, bool) {
	if len(s) < 3 || s[0] != '%' || s[len(s)-1] != '%' || strings.Contains(s[1:len(s)-1], "%") {
		return "", false
	}
	return s[1 : len(s)-1], true
}

// hasWildcards reports whether a Sigma string has an unescaped `*` or `?`.
func hasWildcards(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if i+1 < len(s) && (s[i+1] == '*' || s[i+1] == '?' || s[i+1] == '\\') {
				i++
			}
		case '*', '?':
			return true
		}
	}
	return false
}

// closeBackslash doubles a lone backslash at the end of a Sigma string
// (a literal backslash either way), so that text appended after it is not
// escaped by it.
func closeBackslash(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			continue
		}
		if i+1 < len(s) && (s[i+1] == '*' || s[i+1] == '?' || s[i+1] == '\\') {
			i++
			continue
		}
		if i == len(s)-1 {
			return s + `\`
		}
	}
	return s
}

// unescape returns the literal a Sigma string without wildcards stands for.
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && (s[i+1] == '*' || s[i+1] == '?' || s[i+1] == '\\') {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// escape makes a literal a Sigma string that matches only it.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '*' || s[i] == '?' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// transform applies the transforming modifiers in order; each may turn one
// string into several (windash, base64offset).
func transform(s string, mods []string) ([]string, error) {
	cur := []string{s}
	for _, m := range mods {
		var next []string
		for _, v := range cur {
			out, err := transformOne(v, m)
			if err != nil {
				return nil, err
			}
			next = append(next, out...)
		}
		if len(next) > maxVariants {
			return nil, fmt.Errorf("%s: the value expands to %d strings, more than %d", m, len(next), maxVariants)
		}
		cur = next
	}
	return cur, nil
}

func transformOne(s, m string) ([]string, error) {
	if m == "windash" {
		return windash(s)
	}
	if hasWildcards(s) {
		return nil, fmt.Errorf("%s: a value with wildcards cannot be encoded (%q)", m, s)
	}
	lit := unescape(s)
	switch m {
	case "base64":
		return []string{escape(base64.StdEncoding.EncodeToString([]byte(lit)))}, nil
	case "base64offset":
		return base64Offsets(lit), nil
	case "utf16le", "wide":
		return []string{escape(utf16Bytes(lit, false, false))}, nil
	case "utf16be":
		return []string{escape(utf16Bytes(lit, true, false))}, nil
	case "utf16":
		return []string{escape(utf16Bytes(lit, false, true))}, nil
	}
	return nil, fmt.Errorf("unknown transformation %q", m)
}

// base64Offsets returns the three encodings of s as it would appear inside
// a longer base64 text, at each offset modulo 3, without the characters
// that depend on the bytes around it.
func base64Offsets(s string) []string {
	var out []string
	for i := range 3 {
		enc := base64.StdEncoding.EncodeToString(append(make([]byte, i), s...))
		start := []int{0, 2, 3}[i]
		end := len(enc) - []int{0, 3, 2}[(len(s)+i)%3]
		if start > end {
			continue
		}
		out = append(out, escape(enc[start:end]))
	}
	return out
}

// utf16Bytes encodes s as UTF-16 bytes (little-endian unless be), with a
// byte order mark if bom.
func utf16Bytes(s string, be, bom bool) string {
	var b []byte
	if bom {
		b = append(b, 0xFF, 0xFE)
	}
	for _, u := range utf16.Encode([]rune(s)) {
		if be {
			b = append(b, byte(u>>8), byte(u))
		} else {
			b = append(b, byte(u), byte(u>>8))
		}
	}
	return string(b)
}

// windashChars are what a Windows command line accepts in front of an
// option: hyphen, slash, en dash, em dash, horizontal bar.
var windashChars = []string{"-", "/", "\u2013", "\u2014", "\u2015"}

// windash returns s with every `-` or `/` that begins a word (at the start
// or after a character that is not a letter, digit or _, and before one
// that is) replaced by each of windashChars, in every combination. It
// fails when that makes more than maxVariants strings.
func windash(s string) ([]string, error) {
	var at []int
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c == '-' || c == '/') && (i == 0 || !isWordByte(s[i-1])) && i+1 < len(s) && isWordByte(s[i+1]) {
			at = append(at, i)
		}
	}
	n := 1
	for range at {
		if n *= len(windashChars); n > maxVariants {
			return nil, fmt.Errorf("windash: the value expands to more than %d strings", maxVariants)
		}
	}
	out := make([]string, 0, n)
	choice := make([]int, len(at))
	for range n {
		var b strings.Builder
		b.Grow(len(s) + 2*len(at))
		prev := 0
		for k, i := range at {
			b.WriteString(s[prev:i])
			b.WriteString(windashChars[choice[k]])
			prev = i + 1
		}
		b.WriteString(s[prev:])
		out = append(out, b.String())
		for k := len(choice) - 1; k >= 0; k-- { // the next combination
			if choice[k]++; choice[k] < len(windashChars) {
				break
			}
			choice[k] = 0
		}
	}
	return out, nil
}

func isWordByte(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

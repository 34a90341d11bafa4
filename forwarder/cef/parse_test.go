package cef

import (
	"fmt"
	"strings"
)

// This file holds a CEF reader written from the standard's grammar, not from
// the encoder, so that tests can check what a SIEM would read back. It is
// strict: anything the standard does not allow, or that the encoder should
// never write, is an error rather than a guess.

// cefLine is one parsed CEF line.
type cefLine struct {
	// header holds the seven header fields, unescaped; header[0] is the
	// format version without the "CEF:" prefix.
	header [7]string
	// pairs holds the extension in the order it was written, unescaped.
	pairs []pair
}

type pair struct{ key, value string }

// value returns the value of key and whether it is present.
func (l cefLine) value(key string) (string, bool) {
	for _, p := range l.pairs {
		if p.key == key {
			return p.value, true
		}
	}
	return "", false
}

// parseCEF splits line into its header fields and extension pairs.
//
// Header: fields are separated by unescaped pipes; inside a field only `\\`
// and `\|` are escapes. The extension starts after the seventh pipe.
//
// Extension: a pair starts where " key=" (or "key=" at the very start)
// appears with key in [A-Za-z0-9_.]+ and the "=" not escaped; the value runs
// to the space before the next such key. In values `\\`, `\=`, `\n` and `\r`
// are escapes.
func parseCEF(line string) (cefLine, error) {
	var l cefLine
	if strings.ContainsAny(line, "\r\n") {
		return l, fmt.Errorf("raw line break in line")
	}
	rest, ok := strings.CutPrefix(line, "CEF:")
	if !ok {
		return l, fmt.Errorf("line does not start with CEF:")
	}
	off := len("CEF:")

	var field strings.Builder
	n, i := 0, 0
	for n < len(l.header) {
		if i >= len(rest) {
			return l, fmt.Errorf("header has %d fields, want %d", n, len(l.header))
		}
		switch c := rest[i]; c {
		case '\\':
			if i+1 >= len(rest) || (rest[i+1] != '\\' && rest[i+1] != '|') {
				return l, fmt.Errorf("column %d: bad header escape", off+i+1)
			}
			field.WriteByte(rest[i+1])
			i += 2
		case '|':
			l.header[n] = field.String()
			field.Reset()
			n++
			i++
		default:
			field.WriteByte(c)
			i++
		}
	}
	pairs, err := parseExtension(rest[i:])
	if err != nil {
		return l, fmt.Errorf("extension at column %d: %w", off+i+1, err)
	}
	l.pairs = pairs
	return l, nil
}

func isKeyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.'
}

func parseExtension(ext string) ([]pair, error) {
	// Find every unescaped "=": each must end a key.
	type bound struct{ keyStart, eq int }
	var bounds []bound
	for i := 0; i < len(ext); i++ {
		switch ext[i] {
		case '\\':
			i++ // the escaped byte, whatever it is, is not a separator
		case '=':
			k := i
			for k > 0 && isKeyByte(ext[k-1]) {
				k--
			}
			if k == i {
				return nil, fmt.Errorf("column %d: unescaped = without a key", i+1)
			}
			if k > 0 && ext[k-1] != ' ' {
				return nil, fmt.Errorf("column %d: key %q not preceded by a space", k+1, ext[k:i])
			}
			bounds = append(bounds, bound{k, i})
		}
	}
	if len(bounds) == 0 {
		if ext != "" {
			return nil, fmt.Errorf("text %q without a key", ext)
		}
		return nil, nil
	}
	if bounds[0].keyStart != 0 {
		return nil, fmt.Errorf("text %q before the first key", ext[:bounds[0].keyStart])
	}

	pairs := make([]pair, 0, len(bounds))
	seen := make(map[string]bool)
	for j, b := range bounds {
		end := len(ext)
		if j+1 < len(bounds) {
			end = bounds[j+1].keyStart - 1 // the space before the next key
		}
		key := ext[b.keyStart:b.eq]
		if seen[key] {
			return nil, fmt.Errorf("key %q repeated", key)
		}
		seen[key] = true
		v, err := unescapeValue(ext[b.eq+1 : end])
		if err != nil {
			return nil, fmt.Errorf("value of %s: %w", key, err)
		}
		pairs = append(pairs, pair{key, v})
	}
	return pairs, nil
}

func unescapeValue(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		if i+1 >= len(s) {
			return "", fmt.Errorf("dangling backslash")
		}
		i++
		switch s[i] {
		case '\\', '=':
			b.WriteByte(s[i])
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		default:
			return "", fmt.Errorf("bad escape \\%c", s[i])
		}
	}
	return b.String(), nil
}

package cef

import "unicode/utf8"

// Header field limits from the CEF standard, in bytes of the escaped field.
const (
	maxVendorLen  = 63
	maxProductLen = 63
	maxVersionLen = 31
	maxClassIDLen = 1023
	maxNameLen    = 512
)

// plainInHeader reports whether the ASCII byte c is copied into a header
// field unchanged.
func plainInHeader(c byte) bool {
	return c < utf8.RuneSelf && c != '\\' && c != '|' && c != '\r' && c != '\n'
}

// appendHeaderField appends s to dst escaped for a header field, and reports
// whether s had to be cut.
//
// Escaping: a backslash becomes `\\` and a pipe `\|`; each CR, LF or CRLF
// becomes one space, because a header may not span lines; invalid UTF-8
// becomes U+FFFD. The backslash must be doubled before anything else
// introduces one, which a single pass over the raw input guarantees.
//
// The limit counts bytes of the escaped form, so a field full of pipes keeps
// half as many characters. The cut is made on the raw input, between whole
// units (see nextUnit), so it never splits a rune or an escape pair.
func appendHeaderField(dst []byte, s string, limit int) ([]byte, bool) {
	size := 0 // escaped bytes appended so far
	for i := 0; i < len(s); {
		if plainInHeader(s[i]) {
			j := i + 1
			for j < len(s) && plainInHeader(s[j]) {
				j++
			}
			if room := limit - size; j-i > room {
				return append(dst, s[i:i+room]...), true
			}
			dst = append(dst, s[i:j]...)
			size += j - i
			i = j
			continue
		}
		r, n := nextUnit(s, i)
		var esc string
		switch r {
		case '\\':
			esc = `\\`
		case '|':
			esc = `\|`
		case '\n': // also CR and CRLF, see nextUnit
			esc = " "
		case utf8.RuneError:
			esc = "\uFFFD"
		default:
			esc = s[i : i+n]
		}
		if size+len(esc) > limit {
			return dst, true
		}
		dst = append(dst, esc...)
		size += len(esc)
		i += n
	}
	return dst, false
}

// nextUnit decodes the unit of text at s[i:] that escaping and truncation
// work in, and returns it with the number of bytes of s it spans:
//
//   - a CRLF pair, or a lone CR, is reported as '\n', so CRLF is never split
//     by a cut and never becomes two line breaks;
//   - a maximal run of invalid UTF-8 bytes is reported as utf8.RuneError and
//     written as a single U+FFFD, as strings.ToValidUTF8 does;
//   - anything else is one rune (a valid U+FFFD in the input is reported as
//     utf8.RuneError too, and written the same).
func nextUnit(s string, i int) (rune, int) {
	c := s[i]
	if c < utf8.RuneSelf {
		if c == '\r' {
			if i+1 < len(s) && s[i+1] == '\n' {
				return '\n', 2
			}
			return '\n', 1
		}
		return rune(c), 1
	}
	r, n := utf8.DecodeRuneInString(s[i:])
	if r != utf8.RuneError || n > 1 {
		return r, n
	}
	j := i + 1
	for j < len(s) && s[j] >= utf8.RuneSelf {
		if r, n := utf8.DecodeRuneInString(s[j:]); r != utf8.RuneError || n > 1 {
			break
		}
		j++
	}
	return utf8.RuneError, j - i
}

package cef

import (
	"strconv"
	"unicode/utf8"
)

// builder appends the extension part of a CEF line: space-separated
// key=value pairs. Exactly one pair is open at a time; its value is written
// in one or more pieces (write) so that composite values such as msg and cs6
// need no scratch buffer, and close then settles trimming and omission.
//
// Value rules, in the order they apply to the concatenated pieces:
//
//  1. invalid UTF-8 runs become U+FFFD; CRLF, CR and LF become one line break;
//  2. leading and trailing ASCII whitespace (space, \t, \n, \v, \f, \r) is
//     dropped, because parsers find the end of a value by looking ahead for
//     " key=" and so lose spaces at either end;
//  3. the value is cut, between whole units, to at most limit bytes of that
//     unescaped text, and trailing whitespace the cut exposes is dropped too;
//  4. it is escaped: `\` to `\\` first, so that no later escape is doubled,
//     then `=` to `\=` and a line break to the two characters `\n`. A pipe is
//     not escaped in values.
//
// An empty value omits the pair, together with its label when it has one.
type builder struct {
	dst         []byte
	pairs       int // pairs written; all but the first get a leading space
	truncations int // values cut to their limit

	// The open pair.
	mark      int  // len(dst) before the pair (and its label): where an empty value rolls back to
	markPairs int  // pairs before the pair and its label
	start     int  // len(dst) where the value begins
	keep      int  // len(dst) just after the value's last non-space unit
	limit     int  // maximum value size, in unescaped bytes
	size      int  // unescaped bytes accepted, including whitespace that may yet be trimmed
	full      bool // a unit did not fit: the rest of the value is dropped
	cut       bool // a non-space unit was dropped, so the value was truncated
}

// open starts the pair key=… whose value may be at most limit bytes.
func (b *builder) open(key string, limit int) {
	b.mark, b.markPairs = len(b.dst), b.pairs
	b.openValue(key, limit)
}

// openLabelled starts the pairs labelKey=label key=…, so that the label is
// written only if the value turns out non-empty. label is a constant of this
// package: it is neither escaped nor limited.
func (b *builder) openLabelled(labelKey, label, key string, limit int) {
	b.mark, b.markPairs = len(b.dst), b.pairs
	b.sep()
	b.dst = append(b.dst, labelKey...)
	b.dst = append(b.dst, '=')
	b.dst = append(b.dst, label...)
	b.pairs++
	b.openValue(key, limit)
}

func (b *builder) openValue(key string, limit int) {
	b.sep()
	b.dst = append(b.dst, key...)
	b.dst = append(b.dst, '=')
	b.pairs++
	b.start, b.keep = len(b.dst), len(b.dst)
	b.limit, b.size = limit, 0
	b.full, b.cut = false, false
}

func (b *builder) sep() {
	if b.pairs > 0 {
		b.dst = append(b.dst, ' ')
	}
}

// close ends the open pair: trailing whitespace is dropped, and an empty
// value removes the pair (and its label). It reports whether the pair stayed.
func (b *builder) close() bool {
	if b.cut {
		b.truncations++
	}
	if b.keep == b.start {
		b.dst, b.pairs = b.dst[:b.mark], b.markPairs
		return false
	}
	b.dst = b.dst[:b.keep]
	return true
}

// raw starts the pair key=… for a value the caller appends to b.dst itself:
// numbers and addresses, which need no escaping and cannot be empty.
func (b *builder) raw(key string) {
	b.sep()
	b.dst = append(b.dst, key...)
	b.dst = append(b.dst, '=')
	b.pairs++
}

// isSpace reports whether c is ASCII whitespace, which is trimmed from both
// ends of a value.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// plainInValue reports whether the ASCII byte c is copied into a value
// unchanged.
func plainInValue(c byte) bool {
	return c < utf8.RuneSelf && c != '\\' && c != '=' && c != '\r' && c != '\n'
}

// write appends the next piece of the open value.
func (b *builder) write(s string) {
	for i := 0; i < len(s); {
		if b.full {
			// Dropping whitespace is trimming, not truncation.
			b.cut = b.cut || hasNonSpace(s[i:])
			return
		}
		if plainInValue(s[i]) {
			i = b.writePlain(s, i)
			continue
		}
		r, n := nextUnit(s, i)
		if r == '\n' && b.keep == b.start {
			i += n // leading whitespace
			continue
		}
		var esc string
		size := 1 // unescaped
		switch r {
		case '\\':
			esc = `\\`
		case '=':
			esc = `\=`
		case '\n': // also CR and CRLF, see nextUnit
			esc = `\n`
		case utf8.RuneError:
			esc, size = "\uFFFD", len("\uFFFD")
		default:
			esc, size = s[i:i+n], n
		}
		if b.size+size > b.limit {
			b.full = true
			continue
		}
		b.dst = append(b.dst, esc...)
		b.size += size
		if r != '\n' {
			b.keep = len(b.dst)
		}
		i += n
	}
}

// writePlain appends the run of plain ASCII bytes at s[i:] as one chunk, and
// returns where the run ends (or where the value filled up).
func (b *builder) writePlain(s string, i int) int {
	j := i + 1
	for j < len(s) && plainInValue(s[j]) {
		j++
	}
	if b.keep == b.start {
		for i < j && isSpace(s[i]) {
			i++ // leading whitespace
		}
	}
	if room := b.limit - b.size; j-i > room {
		j = i + room
		b.full = true
	}
	chunk := s[i:j]
	b.dst = append(b.dst, chunk...)
	b.size += len(chunk)
	k := len(chunk)
	for k > 0 && isSpace(chunk[k-1]) {
		k--
	}
	if k > 0 {
		b.keep = len(b.dst) - len(chunk) + k
	}
	return j
}

// writeInt appends the decimal form of n to the open value.
func (b *builder) writeInt(n int64) {
	var buf [20]byte
	b.write(string(strconv.AppendInt(buf[:0], n, 10)))
}

// writeList appends the non-blank items of list to the open value, trimmed and
// separated by commas, and stops before the first item that would not fit
// whole: a partial event id or tag is worse than none.
func (b *builder) writeList(list []string) {
	n := 0
	for _, item := range list {
		item = trimSpace(item)
		if item == "" {
			continue
		}
		size := valueSize(item)
		if n > 0 {
			size++ // the comma
		}
		if b.size+size > b.limit {
			b.cut = true
			return
		}
		if n > 0 {
			b.write(",")
		}
		b.write(item)
		n++
	}
}

// valueSize returns the unescaped size of s once written as (part of) a
// value, before trimming.
func valueSize(s string) int {
	size := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf && c != '\r' {
			size++ // the common case: one ASCII byte, one byte unescaped
			i++
			continue
		}
		r, n := nextUnit(s, i)
		switch {
		case r == utf8.RuneError:
			size += len("\uFFFD")
		case r < utf8.RuneSelf:
			size++
		default:
			size += n
		}
		i += n
	}
	return size
}

func hasNonSpace(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isSpace(s[i]) {
			return true
		}
	}
	return false
}

// trimSpace removes the whitespace isSpace matches from both ends of s.
func trimSpace(s string) string {
	i, j := 0, len(s)
	for i < j && isSpace(s[i]) {
		i++
	}
	for j > i && isSpace(s[j-1]) {
		j--
	}
	return s[i:j]
}

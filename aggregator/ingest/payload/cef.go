package payload

import (
	"strings"
	"unicode/utf8"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// CEF (ArcSight Common Event Format), as Palo Alto, Fortinet, Check Point,
// Cisco FTD, Imperva and F5 send it:
//
//	CEF:Version|Device Vendor|Device Product|Device Version|Device Event Class ID|Name|Severity|Extension
//
// In the header a pipe or backslash in a field is escaped (`\|`, `\\`).
// The extension is key=value pairs separated by spaces; a value runs to
// the space before the next key and may hold spaces; in it `\=`, `\\`,
// `\n` and `\r` are escapes. The header gives device_vendor,
// device_product and event_code (the signature id), and cef.version,
// cef.device_version, cef.name, cef.severity; every extension key no field
// takes is cef.<key>.

// cefHeader names the seven header fields, as attributes.
var cefHeader = [7]string{"version", "device_vendor", "device_product", "device_version", "signature_id", "name", "severity"}

var cefMapping = &mapping{
	srcIP:    []string{"src", "c6a2", "sourceTranslatedAddress"},
	dstIP:    []string{"dst", "c6a3", "destinationTranslatedAddress"},
	srcPort:  []string{"spt"},
	dstPort:  []string{"dpt"},
	user:     []string{"suser"},
	protocol: []string{"proto"},
	action:   []string{"act"},
	outcome:  []string{"outcome"},
	schema: map[string][]string{
		event.FieldTargetUser:  {"duser"},
		event.FieldURL:         {"request"},
		event.FieldHTTPMethod:  {"requestMethod"},
		event.FieldFilePath:    {"filePath", "fname"},
		event.FieldFileHash:    {"fileHash"},
		event.FieldProcess:     {"sproc", "deviceProcessName", "dproc"},
		event.FieldProcessID:   {"spid", "dvcpid", "dpid"},
		event.FieldService:     {"app"},
		event.FieldBytesIn:     {"in"},
		event.FieldBytesOut:    {"out"},
		event.FieldDNSQuery:    {"destinationDnsDomain"},
		event.FieldCommandLine: {"cmd"},
	},
}

// ruleLabels are csN labels that name the rule or policy that decided.
var ruleLabels = map[string]bool{"rule": true, "rule name": true, "rulename": true, "policy": true, "policy name": true, "policyname": true, "security rule": true, "access rule": true, "rule_name": true}

// csLabels are the keys of the custom strings' labels, cs1Label to
// cs6Label; their values are under cs1 to cs6.
var csLabels = [...]string{"cs1Label", "cs2Label", "cs3Label", "cs4Label", "cs5Label", "cs6Label"}

// isRuleLabel reports whether label, in any case, is one of ruleLabels.
func isRuleLabel(label string) bool {
	var buf [16]byte // longer than any of them
	if len(label) > len(buf) {
		return false
	}
	for i := range len(label) {
		c := label[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return ruleLabels[string(buf[:len(label)])] // no copy: a map key lookup
}

func applyCEF(ev *event.Event, keep Keep) bool {
	f, ok := parseCEF(tagged(ev, "CEF"))
	if !ok {
		return false
	}
	defer f.free()
	f.only, f.header = keep, true
	f.apply(ev, cefMapping)
	for _, label := range csLabels {
		if l, _ := f.get(label); l != "" && isRuleLabel(l) {
			v, _ := f.get(label[:len("csN")])
			ev.Set(event.FieldRuleName, clip(v))
		}
	}
	fromHeader(ev, f, "CEF")
	return true
}

// parseCEF reads a CEF message: the header fields (under cefHeader's
// names) then the extension's keys, in order.
func parseCEF(msg string) (*fields, bool) {
	rest, ok := strings.CutPrefix(msg, "CEF:")
	if !ok {
		return nil, false
	}
	f := newFields("cef.")
	for i := range cefHeader {
		v, after, found := cutHeader(rest)
		if !found {
			return nil, false
		}
		f.add(cefHeader[i], v)
		rest = after
	}
	parseExtension(rest, f)
	return f, true
}

// cutHeader returns the header field at the start of s, unescaped, and what
// follows its closing pipe.
func cutHeader(s string) (field, rest string, ok bool) {
	// Without an escape before the pipe, the field is s up to it.
	if i := strings.IndexAny(s, `|\`); i >= 0 && s[i] == '|' {
		return clip(s[:i]), s[i+1:], true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && i+1 < len(s) && (s[i+1] == '|' || s[i+1] == '\\'):
			b.WriteByte(s[i+1])
			i++
		case c == '|':
			return clip(b.String()), s[i+1:], true
		default:
			if b.Len() < maxValue+utf8.UTFMax { // clip cuts it between characters
				b.WriteByte(c)
			}
		}
	}
	return "", "", false
}

// parseExtension reads key=value pairs: a key is a run of key bytes (and
// '[' ']') after a space or the start, before an unescaped '='; its value
// runs to the space before the next key.
func parseExtension(s string, f *fields) {
	type pos struct{ ks, ke int } // a key's start and its '='
	var keys []pos
	for i := 0; i < len(s) && len(keys) <= maxAttrs; i++ {
		switch s[i] {
		case '\\':
			i++ // an escape: the next byte is never a separator
		case '=':
			k := i
			for k > 0 && isExtKeyByte(s[k-1]) && i-k < maxKey {
				k--
			}
			if k < i && (k == 0 || s[k-1] == ' ') {
				keys = append(keys, pos{k, i})
			}
		}
	}
	for n, p := range keys {
		end := len(s)
		if n+1 < len(keys) {
			end = keys[n+1].ks
		}
		v := s[p.ke+1 : end]
		if n+1 < len(keys) {
			v = strings.TrimSuffix(v, " ")
		}
		f.add(s[p.ks:p.ke], unescapeExt(strings.TrimRight(v, " ")))
	}
}

func isExtKeyByte(c byte) bool { return isKeyByte(c) && c != '-' || c == '[' || c == ']' }

// unescapeExt undoes the extension's escapes: \= \\ \n \r.
func unescapeExt(v string) string {
	if !strings.Contains(v, `\`) {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) {
			switch v[i+1] {
			case '=', '\\':
				b.WriteByte(v[i+1])
				i++
				continue
			case 'n':
				b.WriteByte('\n')
				i++
				continue
			case 'r':
				b.WriteByte('\r')
				i++
				continue
			}
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

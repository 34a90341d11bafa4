package payload

import (
	"strings"
	"unicode/utf8"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// key=value, as FortiGate and many appliances send it:
//
//	date=2026-12-04 time=10:00:00 devname="FGT-EDGE" srcip=10.0.0.5 action="deny" policyname="no telnet"
//
// Pairs are separated by spaces. A value in double quotes may hold spaces
// (and `\"`); an unquoted one runs to the space before the next key, so
// `msg=disk full on /var user=x` reads as two pairs. A message is taken
// as key=value only if it starts with a key and holds at least three
// pairs. Every key becomes kv.<key>.

var kvMapping = &mapping{
	srcIP:    []string{"srcip", "src", "src_ip", "source_ip", "sip", "client_ip", "remip"},
	dstIP:    []string{"dstip", "dst", "dst_ip", "destination_ip", "dip", "server_ip"},
	srcPort:  []string{"srcport", "spt", "sport", "src_port", "source_port"},
	dstPort:  []string{"dstport", "dpt", "dport", "dst_port", "destination_port"},
	user:     []string{"user", "srcuser", "usrName", "username", "suser", "login"},
	protocol: []string{"proto", "protocol"},
	action:   []string{"action", "act"},
	outcome:  []string{"outcome", "result"},
	schema: map[string][]string{
		event.FieldService:     {"service", "app"},
		event.FieldRuleName:    {"policyname", "policy", "rule", "rulename", "rule_name"},
		event.FieldBytesOut:    {"sentbyte", "bytes_sent", "sent_bytes", "bytes_out"},
		event.FieldBytesIn:     {"rcvdbyte", "bytes_received", "rcvd_bytes", "bytes_in"},
		event.FieldURL:         {"url", "uri"},
		event.FieldHTTPMethod:  {"method", "http_method", "reqmethod"},
		event.FieldHTTPStatus:  {"status_code", "http_status", "httpstatus"},
		event.FieldDNSQuery:    {"qname", "query", "dns_query"},
		event.FieldTargetUser:  {"dstuser", "duser", "target_user"},
		event.FieldEventCode:   {"logid", "eventid", "event_id"},
		event.FieldFilePath:    {"filename", "file", "file_path"},
		event.FieldProcess:     {"process", "proc"},
		event.FieldCommandLine: {"cmd", "command", "cmdline"},
	},
}

func applyKV(ev *event.Event, keep Keep) bool {
	f, ok := parseKV(ev.Message)
	if !ok {
		return false
	}
	defer f.free()
	f.only = keep
	f.apply(ev, kvMapping)
	return true
}

// looksKV is the cheap test Detect runs: a key and '=' at the start, and
// at least three " key=" in all.
func looksKV(m string) bool {
	if k := keyAt(m, 0); k == 0 {
		return false
	}
	n := 1
	for i := 1; i < len(m) && n < 3; i++ {
		if m[i-1] == ' ' && keyAt(m, i) > 0 {
			n++
		}
	}
	return n >= 3
}

// keyAt returns the length of the key starting at m[i] and followed by
// '=', 0 if there is none. A key starts with a letter or '_'.
func keyAt(m string, i int) int {
	if i >= len(m) || !(m[i] >= 'a' && m[i] <= 'z' || m[i] >= 'A' && m[i] <= 'Z' || m[i] == '_') {
		return 0
	}
	j := i
	for j < len(m) && j-i < maxKey && isKeyByte(m[j]) {
		j++
	}
	if j < len(m) && m[j] == '=' {
		return j - i
	}
	return 0
}

func parseKV(m string) (*fields, bool) {
	if !looksKV(m) {
		return nil, false
	}
	f := newFields("kv.")
	i := 0
	for i < len(m) && len(f.keys) < maxAttrs {
		for i < len(m) && m[i] == ' ' {
			i++
		}
		n := keyAt(m, i)
		if n == 0 {
			// Not a key: skip to the next space (stray text).
			for i < len(m) && m[i] != ' ' {
				i++
			}
			continue
		}
		key := m[i : i+n]
		i += n + 1
		var v string
		if i < len(m) && m[i] == '"' {
			v, i = quoted(m, i+1)
		} else {
			start := i
			for i < len(m) {
				if m[i] != ' ' {
					i++
					continue
				}
				j := i // the run of spaces, skipped whole (linear time)
				for j < len(m) && m[j] == ' ' {
					j++
				}
				if j == len(m) || keyAt(m, j) > 0 {
					break
				}
				i = j
			}
			v = m[start:i]
		}
		f.add(key, v)
	}
	return f, len(f.keys) >= 3
}

// quoted reads a double-quoted value whose opening quote is before m[i]:
// it returns the value with `\"` and `\\` undone, and the index after the
// closing quote (the end, if there is none).
func quoted(m string, i int) (string, int) {
	// Without an escape before the closing quote, the value is m up to it.
	if j := strings.IndexAny(m[i:], `"\`); j >= 0 && m[i+j] == '"' {
		return clip(m[i : i+j]), i + j + 1
	}
	var b strings.Builder
	for ; i < len(m); i++ {
		switch c := m[i]; {
		case c == '\\' && i+1 < len(m) && (m[i+1] == '"' || m[i+1] == '\\'):
			b.WriteByte(m[i+1])
			i++
		case c == '"':
			return clip(b.String()), i + 1
		default:
			if b.Len() < maxValue+utf8.UTFMax { // clip cuts it between characters
				b.WriteByte(c)
			}
		}
	}
	return clip(b.String()), i
}

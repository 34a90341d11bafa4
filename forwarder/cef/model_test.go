package cef

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// This file is a reference model of the mapping, written with plain string
// functions: it says what a parser must read back from an encoded alert. It
// shares no code with the encoder, so the two check each other.

const asciiSpace = " \t\n\v\f\r"

// wantValue is what a parser reads back for an extension value given raw
// text: invalid UTF-8 replaced, line breaks normalized to LF, ends trimmed,
// cut on a rune boundary to limit bytes, and trimmed again.
func wantValue(raw string, limit int) string {
	s := strings.ToValidUTF8(raw, "\uFFFD")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	s = strings.Trim(s, asciiSpace)
	if len(s) > limit {
		s = s[:limit]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		s = strings.TrimRight(s, asciiSpace)
	}
	return s
}

// wantHeader is what a parser reads back for a header field given raw text:
// line breaks become one space, and the field is cut on a rune boundary so
// its escaped form (where `\` and `|` take two bytes) fits limit.
func wantHeader(raw string, limit int) string {
	s := strings.ToValidUTF8(raw, "\uFFFD")
	s = strings.ReplaceAll(s, "\r\n", " ")
	s = strings.ReplaceAll(s, "\r", " ")
	s = strings.ReplaceAll(s, "\n", " ")
	size := 0
	for i, r := range s {
		n := utf8.RuneLen(r)
		if r == '\\' || r == '|' {
			n = 2
		}
		if size+n > limit {
			return s[:i]
		}
		size += n
	}
	return s
}

// wantList joins the non-blank items with commas, keeping only whole items
// that fit limit.
func wantList(items []string, limit int) string {
	var out string
	for _, it := range items {
		it = wantValue(it, math.MaxInt)
		if it == "" {
			continue
		}
		next := it
		if out != "" {
			next = out + "," + it
		}
		if len(next) > limit {
			break
		}
		out = next
	}
	return out
}

func wantTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// wantLine returns the header fields and extension pairs a parser must read
// back for a encoded with o (after defaults).
func wantLine(o Options, a *event.Alert) ([7]string, []pair) {
	name := a.Title
	if name == "" {
		name = a.RuleID
	}
	header := [7]string{"0", o.Vendor, o.Product, o.Version,
		wantHeader(a.RuleID, 1023), wantHeader(name, 512),
		strconv.Itoa(min(max(a.Severity, 0), 10))}

	var pairs []pair
	add := func(key, value string) {
		if value != "" {
			pairs = append(pairs, pair{key, value})
		}
	}
	labelled := func(labelKey, label, key, value string) {
		if value != "" {
			pairs = append(pairs, pair{labelKey, label}, pair{key, value})
		}
	}
	ms := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return strconv.FormatInt(t.UnixMilli(), 10)
	}

	add("rt", ms(a.LastSeen))
	add("start", ms(a.FirstSeen))
	add("end", ms(a.LastSeen))
	if a.Count > 0 {
		add("cnt", strconv.Itoa(a.Count))
	}
	add("externalId", wantValue(a.ID, 40))
	add("deviceExternalId", wantValue(o.DeviceExternalID, 255))
	add("dvchost", wantValue(o.DeviceHost, 100))

	rest := make(map[string]string, len(a.Fields))
	for k, v := range a.Fields {
		rest[k] = v
	}
	for _, ip := range []struct{ field, key4, labelKey6, label6, key6 string }{
		{"src_ip", "src", "c6a3Label", "Source IPv6 Address", "c6a3"},
		{"dst_ip", "dst", "c6a4Label", "Destination IPv6 Address", "c6a4"},
	} {
		addr, err := netip.ParseAddr(strings.Trim(a.Fields[ip.field], asciiSpace))
		if err != nil || addr.Zone() != "" {
			continue
		}
		delete(rest, ip.field)
		if addr.Is4() || addr.Is4In6() {
			add(ip.key4, addr.Unmap().String())
		} else {
			labelled(ip.labelKey6, ip.label6, ip.key6, addr.String())
		}
	}
	for _, p := range []struct{ field, key string }{{"src_port", "spt"}, {"dst_port", "dpt"}} {
		s := strings.Trim(a.Fields[p.field], asciiSpace)
		if s == "" || strings.Trim(s, "0123456789") != "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n > 65535 {
			continue
		}
		delete(rest, p.field)
		add(p.key, strconv.Itoa(n))
	}
	for _, f := range []struct {
		field, key string
		limit      int
	}{
		{"protocol", "proto", 31}, {"user", "suser", 1023}, {"host", "dhost", 1023},
		{"action", "act", 63}, {"outcome", "outcome", 63}, {"app", "app", 31},
	} {
		add(f.key, wantValue(a.Fields[f.field], f.limit))
		delete(rest, f.field)
	}

	add("msg", wantValue(wantSummary(a), 1023))

	labelled("cs1Label", "Group Key", "cs1", wantValue(a.Key, 4000))
	labelled("cs2Label", "Rule Kind", "cs2", wantValue(a.Kind, 4000))
	labelled("cs3Label", "MITRE ATT&CK", "cs3", wantList(a.Tags, 4000))
	labelled("cs4Label", "Evidence Event IDs", "cs4", wantList(a.EventIDs, 4000))
	labelled("cs5Label", "Description", "cs5", wantValue(a.Description, 4000))

	keys := make([]string, 0, len(rest))
	for k := range rest {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var kv []string
	for _, k := range keys {
		if v := strings.Trim(rest[k], asciiSpace); v != "" {
			kv = append(kv, k+"="+v)
		}
	}
	labelled("cs6Label", "Fields", "cs6", wantValue(strings.Join(kv, "; "), 4000))
	labelled("flexString1Label", "Distinct Values", "flexString1", wantList(a.Values, 1023))
	var steps []string
	for _, st := range a.Steps {
		steps = append(steps, st.Name+"@"+st.Time.UTC().Format(time.RFC3339))
	}
	labelled("flexString2Label", "Sequence Steps", "flexString2", wantList(steps, 1023))
	return header, pairs
}

// wantSummary is the raw msg text, before value rules apply.
func wantSummary(a *event.Alert) string {
	if a.Count <= 1 {
		if wantValue(a.Description, math.MaxInt) != "" {
			return a.Description
		}
		return a.Title
	}
	s := fmt.Sprintf("%d events", a.Count)
	if key := strings.Trim(a.Key, asciiSpace); key != "" {
		s += " from " + key
	}
	first, last := a.FirstSeen, a.LastSeen
	switch {
	case first.IsZero() && last.IsZero():
	case first.IsZero():
		s += " at " + wantTime(last)
	case last.IsZero() || first.Equal(last):
		s += " at " + wantTime(first)
	default:
		s += " between " + wantTime(first) + " and " + wantTime(last)
	}
	return s
}

package payload

import (
	"strconv"
	"strings"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// LEEF (IBM QRadar's Log Event Extended Format):
//
//	LEEF:1.0|Vendor|Product|Version|EventID|key=value<TAB>key=value...
//	LEEF:2.0|Vendor|Product|Version|EventID|Delimiter|key=value<D>key=value...
//
// In 2.0 the delimiter is one character, or its code as hex (`0x5E`,
// `x5E`); left out, or in 1.0, it is a tab. A value is everything up to the
// next delimiter (only ASCII delimiters can be given as hex). The header
// gives device_vendor, device_product and event_code, and leef.version,
// leef.device_version; every attribute no field takes is leef.<key>.

var leefMapping = &mapping{
	srcIP:    []string{"src", "srcPreNAT", "srcPostNAT"},
	dstIP:    []string{"dst", "dstPreNAT", "dstPostNAT"},
	srcPort:  []string{"srcPort", "srcPreNATPort"},
	dstPort:  []string{"dstPort", "dstPreNATPort"},
	user:     []string{"usrName", "accountName", "userName"},
	protocol: []string{"proto"},
	action:   []string{"action", "act"},
	outcome:  []string{"outcome", "result"},
	schema: map[string][]string{
		event.FieldBytesOut:    {"srcBytes"},
		event.FieldBytesIn:     {"dstBytes"},
		event.FieldURL:         {"url"},
		event.FieldHTTPMethod:  {"method", "httpMethod"},
		event.FieldHTTPStatus:  {"status", "httpStatus"},
		event.FieldRuleName:    {"policy", "policyName", "ruleName", "rule"},
		event.FieldTargetUser:  {"dstUserName", "targetUser"},
		event.FieldFilePath:    {"fileName", "filePath"},
		event.FieldProcess:     {"process", "processName"},
		event.FieldCommandLine: {"commandLine"},
		event.FieldService:     {"service", "application"},
		event.FieldDNSQuery:    {"domain", "dnsQuery"},
	},
}

func applyLEEF(ev *event.Event, keep Keep) bool {
	f, ok := parseLEEF(tagged(ev, "LEEF"))
	if !ok {
		return false
	}
	defer f.free()
	f.only, f.header = keep, true
	f.apply(ev, leefMapping)
	fromHeader(ev, f, "LEEF")
	return true
}

var leefHeader = [5]string{"version", "device_vendor", "device_product", "device_version", "event_id"}

func parseLEEF(msg string) (*fields, bool) {
	rest, ok := strings.CutPrefix(msg, "LEEF:")
	if !ok {
		return nil, false
	}
	f := newFields("leef.")
	for i := range leefHeader {
		v, after, found := strings.Cut(rest, "|")
		if !found || len(v) > maxValue {
			return nil, false
		}
		f.add(leefHeader[i], v)
		rest = after
	}
	delim := "\t"
	if ver, _ := f.get("version"); strings.HasPrefix(ver, "2") {
		// The delimiter field, unless the sender left it out (then the
		// attributes follow at once: the field holds a '=').
		if d, after, found := strings.Cut(rest, "|"); found && !strings.Contains(d, "=") {
			if dd, ok := leefDelimiter(d); ok {
				delim = dd
			}
			rest = after
		}
	}
	// The pairs as strings.SplitN(rest, delim, maxAttrs+1) gives them,
	// without the slice.
	for n := 0; ; n++ {
		pair, after, more := strings.Cut(rest, delim)
		if n == maxAttrs {
			pair, more = rest, false
		}
		if k, v, found := strings.Cut(pair, "="); found {
			if k = strings.TrimSpace(k); k != "" && len(k) <= maxKey {
				f.add(k, v)
			}
		}
		if !more {
			break
		}
		rest = after
	}
	return f, true
}

// leefDelimiter reads LEEF 2.0's delimiter field: a character, or its hex
// code (0x09, x09). Empty means a tab.
func leefDelimiter(d string) (string, bool) {
	switch {
	case d == "":
		return "\t", true
	case len(d) > 1 && (strings.HasPrefix(d, "0x") || strings.HasPrefix(d, "x")):
		h := strings.TrimPrefix(strings.TrimPrefix(d, "0"), "x")
		n, err := strconv.ParseUint(h, 16, 8)
		if err != nil || n == 0 {
			return "", false
		}
		return string(rune(n)), true
	case len([]rune(d)) == 1:
		return d, true
	}
	return "", false
}

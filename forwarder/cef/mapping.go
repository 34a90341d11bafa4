package cef

import (
	"sort"
	"strconv"
	"strings"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// A rule may map event fields to CEF keys of its choice (`cef:` in the rule
// file); the alert carries the result in Alert.CEF, CEF key → value. Keys
// that one of the default mappings also writes replace the default value;
// the others are written after cs5, in key order. Keys the encoder owns
// (the timestamps, cnt, externalId, the device keys, cs1..cs5 and the
// flexStrings) cannot be mapped.

// mappable lists the CEF keys a rule may map, with their length limit (0
// for the typed keys: addresses, ports, longs).
var mappable = map[string]int{
	// Replace a default mapping.
	"src": 0, "dst": 0, "spt": 0, "dpt": 0,
	"proto": 31, "suser": 1023, "dhost": 1023, "act": 63, "outcome": 63, "app": 31, "msg": 1023,
	// Extra keys.
	"duser": 1023, "shost": 1023, "suid": 1023, "duid": 1023, "sntdom": 255, "dntdom": 255,
	"cat": 1023, "reason": 1023, "request": 1023, "requestMethod": 1023,
	"requestClientApplication": 1023, "requestContext": 2048,
	"fname": 1023, "filePath": 1023, "fileHash": 255, "deviceProcessName": 1023,
	"cs6": 4000, "cn1": 0, "cn2": 0, "cn3": 0,
}

// defaultField is the alert field a default mapping reads for a key.
var defaultField = map[string]string{
	"src": "src_ip", "dst": "dst_ip", "spt": "src_port", "dpt": "dst_port",
	"proto": "protocol", "suser": "user", "dhost": "host", "act": "action", "outcome": "outcome", "app": "app",
}

// MappableKeys returns the CEF keys a rule's `cef:` may name, sorted.
func MappableKeys() []string {
	keys := make([]string, 0, len(mappable))
	for k := range mappable {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// IsMappable reports whether a rule may map a field to key.
func IsMappable(key string) bool {
	_, ok := mappable[key]
	return ok
}

// withOverrides returns the fields the default mappings read, with the
// rule's mapped values in place of the defaults (the same validation then
// applies: an address that does not parse is not written as an address).
func withOverrides(a *event.Alert) map[string]string {
	if len(a.CEF) == 0 {
		return a.Fields
	}
	fields := make(map[string]string, len(a.Fields)+len(a.CEF))
	for k, v := range a.Fields {
		fields[k] = v
	}
	for key, v := range a.CEF {
		if f, ok := defaultField[key]; ok {
			fields[f] = v
		}
	}
	return fields
}

// appendMapped writes the rule's extra CEF keys in key order. A cn value
// that is not an integer is left out. A custom key's label (cnN, cs6) is
// the name of the field the rule mapped to it, carried as CEF["<key>Label"]
// and restricted to [A-Za-z0-9_.] when the rule loads.
func appendMapped(b *builder, a *event.Alert) {
	if len(a.CEF) == 0 {
		return
	}
	keys := make([]string, 0, len(a.CEF))
	for k := range a.CEF {
		if _, isDefault := defaultField[k]; !isDefault && k != "msg" && k != "cs6" && IsMappable(k) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := a.CEF[k]
		if strings.HasPrefix(k, "cn") {
			n, err := strconv.ParseInt(trimSpace(v), 10, 64)
			if err != nil {
				continue
			}
			b.openLabelled(k+"Label", labelFor(a, k), k, 20)
			b.writeInt(n)
			b.close()
			continue
		}
		b.open(k, mappable[k])
		b.write(v)
		b.close()
	}
}

func labelFor(a *event.Alert, key string) string {
	if l := a.CEF[key+"Label"]; l != "" {
		return l
	}
	return key
}

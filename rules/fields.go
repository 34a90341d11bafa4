package rules

import (
	"strconv"
	"strings"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// getter reads one named field of an Event as a string, for group keys and
// the fields a rule carries into its alert.
type getter func(*event.Event) string

// fieldGetters lists the Event fields a rule may group on or carry. The
// names are the Event's `expr` names, the same ones conditions use.
var fieldGetters = map[string]getter{
	"id":       func(e *event.Event) string { return e.ID },
	"source":   func(e *event.Event) string { return e.Source },
	"sender":   func(e *event.Event) string { return e.Sender },
	"host":     func(e *event.Event) string { return e.Host },
	"app":      func(e *event.Event) string { return e.App },
	"proc_id":  func(e *event.Event) string { return e.ProcID },
	"msg_id":   func(e *event.Event) string { return e.MsgID },
	"facility": func(e *event.Event) string { return strconv.Itoa(e.Facility) },
	"severity": func(e *event.Event) string { return strconv.Itoa(e.Severity) },
	"message":  func(e *event.Event) string { return e.Message },
	"category": func(e *event.Event) string { return e.Category },
	"action":   func(e *event.Event) string { return e.Action },
	"outcome":  func(e *event.Event) string { return e.Outcome },
	"user":     func(e *event.Event) string { return e.User },
	"src_ip":   func(e *event.Event) string { return e.SrcIP },
	"src_port": func(e *event.Event) string { return portString(e.SrcPort) },
	"dst_ip":   func(e *event.Event) string { return e.DstIP },
	"dst_port": func(e *event.Event) string { return portString(e.DstPort) },
	"protocol": func(e *event.Event) string { return e.Protocol },
}

func portString(p int) string {
	if p == 0 {
		return ""
	}
	return strconv.Itoa(p)
}

// lookupField returns the getter for name: an Event field, or
// "attrs.<key>" for an open-ended attribute.
func lookupField(name string) (getter, bool) {
	if g, ok := fieldGetters[name]; ok {
		return g, true
	}
	if event.IsSchemaField(name) {
		return func(e *event.Event) string { return e.Attrs[name] }, true
	}
	if key, ok := strings.CutPrefix(name, "attrs."); ok && key != "" {
		return func(e *event.Event) string { return e.Attrs[key] }, true
	}
	return nil, false
}

// keyEscaper keeps group keys unambiguous when values hold the separators.
var keyEscaper = strings.NewReplacer(`\`, `\\`, `;`, `\;`, `=`, `\=`)

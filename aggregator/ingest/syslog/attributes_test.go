package syslog

import (
	"testing"
)

// Over TCP, the source keeps the attributes SetAttributes names and the
// schema's fields (ingest.syslog.attributes: read), or every attribute
// (all); the message is kept whole either way.
func TestSourceKeepsTheAttributesRulesRead(t *testing.T) {
	const msg = `<134>1 2026-12-04T10:00:00Z fw-01 - - - - CEF:0|Example|Firewall|1.0|100|Allowed|3|src=198.51.100.7 dst=10.0.0.4 dpt=443 act=allow cs3Label=Zone cs3=dmz cs4=untouched`
	for _, tc := range []struct {
		setting string
		want    map[string]string // attribute -> value, "" for absent
	}{
		{AttributesRead, map[string]string{"cef.cs3": "dmz", "device_vendor": "Example", "event_code": "100", "cef.cs4": "", "cef.cs3Label": "", "cef.name": ""}},
		{AttributesAll, map[string]string{"cef.cs3": "dmz", "device_vendor": "Example", "event_code": "100", "cef.cs4": "untouched", "cef.cs3Label": "Zone", "cef.name": "Allowed"}},
	} {
		t.Run(tc.setting, func(t *testing.T) {
			sink := &memSink{}
			ts := startSource(t, Config{TCP: []string{"127.0.0.1:0"}, Attributes: tc.setting}, sink, func(s *Source) {
				s.SetAttributes(map[string]bool{"cef.cs3": true}, false)
			})
			c := dial(t, "tcp", ts.tcpAddr())
			write(t, c, octet(msg))
			evs, _ := sink.wait(t, 1, 0)
			ev := evs[0]
			if ev.SrcIP != "198.51.100.7" || ev.DstPort != 443 || ev.Action != "allow" || len(ev.Message) < 100 {
				t.Errorf("fields: %+v", ev)
			}
			for k, v := range tc.want {
				if got, ok := ev.Attrs[k]; got != v || ok != (v != "") {
					t.Errorf("attrs[%q] = %q (present %v), want %q", k, got, ok, v)
				}
			}
			wantDropped := 0.0
			if tc.setting == AttributesRead {
				wantDropped = 6 // cs3Label, cs4, and the header's version, device version, name, severity
			}
			if got := ts.metric(t, "outpost_syslog_attributes_dropped_total", nil); got != wantDropped {
				t.Errorf("dropped = %v, want %v", got, wantDropped)
			}
		})
	}
}

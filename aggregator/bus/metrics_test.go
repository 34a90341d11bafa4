package bus

import "testing"

func TestDeadLetterLabels(t *testing.T) {
	for _, tc := range []struct{ source, reason, stage, class string }{
		{"late", "late: event time 2026-11-23T10:00:00Z is more than 2m0s behind", "filter", "late"},
		{"filter", "decoding event: wire: record truncated", "filter", "undecodable"},
		{"windows", "batch truncated", "windows", "undecodable"},
		{"forwarder", "json: unexpected end of input", "forwarder", "undecodable"},
		{"syslog", "oversize: no LF within the limit of 65536 bytes", "syslog", "oversize"},
		{"syslog", "bad_length: expected an octet count", "syslog", "bad_length"},
		{"syslog", "expecting a version value in the range 1-999 [col 5]", "syslog", "unparsable"},
		{"azure_blob", "schema: no time", "azure_blob", "schema"},
		{"azure_blob", "evil<script>: x", "azure_blob", "unparsable"},
		{"attacker-chosen", "oversize: event of 2000000 bytes", "other", "oversize"},
	} {
		stage, class := deadLetterLabels(tc.source, tc.reason)
		if stage != tc.stage || class != tc.class {
			t.Errorf("deadLetterLabels(%q, %q) = %q, %q; want %q, %q", tc.source, tc.reason, stage, class, tc.stage, tc.class)
		}
	}
}

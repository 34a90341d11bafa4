package azureblob

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// A legacy firewall text that starts with spaces has no protocol word:
// it is read without one, not a crash (found by review).
func TestFirewallMsgWithoutProtocol(t *testing.T) {
	rec := []byte(`{"time":"2026-01-01T00:00:00Z","category":"AzureFirewallNetworkRule","resourceId":"/x/fw","properties":{"msg":"  request from 192.0.2.1:1 to 192.0.2.2:2. Action: Deny."}}`)
	evs, err := Parse(rec, Origin{Container: "insights-logs-azurefirewallnetworkrule", Key: "k", Received: received})
	if err != nil || len(evs) != 1 || evs[0].Protocol != "" || evs[0].Action != "deny" {
		t.Fatalf("events %+v, err %v", evs, err)
	}
}

// Fill reads each path once per record, however many events the record
// gave (a flow log's tuples): linear, not events × record size (found by
// review: 4,000 tuples took 11.6 s).
func TestRecordFieldsOncePerRecord(t *testing.T) {
	var tuples []string
	for i := range 4000 {
		tuples = append(tuples, fmt.Sprintf(`"%d,192.0.2.1,192.0.2.2,%d,443,T,I,A"`, 1767225600+i, 1024+i%60000))
	}
	rec := []byte(`{"time":"2026-01-01T00:00:00Z","category":"NetworkSecurityGroupFlowEvent","resourceId":"/x/nsg","properties":{"Version":1,"flows":[{"rule":"r1","flows":[{"mac":"00","flowTuples":[` +
		strings.Join(tuples, ",") + `]}]}]}}`)
	evs := make([]*event.Event, 4000)
	for i := range evs {
		evs[i] = &event.Event{Source: SourceNSGFlow}
	}
	rf := NewRecordFields(map[string][]string{SourceNSGFlow: {"flows.rule", "properties", "flows.flows.mac"}})
	start := time.Now()
	rf.Fill(rec, evs)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Fill took %s for one record of %d events", d, len(evs))
	}
	if evs[3999].Attrs["rec.flows.rule"] != "r1" || evs[0].Attrs["rec.flows.flows.mac"] != "00" {
		t.Errorf("attrs %v", evs[3999].Attrs)
	}
}

// A SAS signature is a credential: redacted in the parsed URL and in any
// record field a rule reads, also percent-encoded (found by review).
func TestSASRedacted(t *testing.T) {
	for _, u := range []string{"https://a.blob.core.windows.net/c/b?sv=1&sig=c2VjcmV0&se=2", "https://a/c?%73ig=c2VjcmV0&sv=1", "https://a/c?SIG=x"} {
		if got := redactSAS(u); strings.Contains(got, "c2VjcmV0") || strings.Contains(got, "=x") || !strings.Contains(got, "REDACTED") {
			t.Errorf("redactSAS(%q) = %q", u, got)
		}
	}
	ev := &event.Event{Source: SourceStorage}
	NewRecordFields(map[string][]string{SourceStorage: {"uri"}}).Fill([]byte(`{"uri":"https://a/c/b?sv=1&sig=c2VjcmV0"}`), []*event.Event{ev})
	if strings.Contains(ev.Attrs["rec.uri"], "c2VjcmV0") {
		t.Errorf("rec.uri = %q", ev.Attrs["rec.uri"])
	}
}

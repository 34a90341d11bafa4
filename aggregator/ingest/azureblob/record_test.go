package azureblob

import (
	"strings"
	"testing"

	"github.com/outpost-siem/outpost/aggregator/event"
)

func TestRecordFields(t *testing.T) {
	long := strings.Repeat("x", maxRecordValue+10)
	rec := []byte(`{"time":"2026-12-04T10:00:00Z","resultType":"50126","Level":4,
		"identity":{"claims":{"ipaddr":"203.0.113.9"}},
		"properties":{"authenticationProtocol":"ROPC","deviceDetail":{"isCompliant":false,"browser":null},
			"status":{"errorCode":50126},"appliedConditionalAccessPolicies":[{"id":"p1","result":"notApplied"}],
			"resultType":"shadowed","long":"` + long + `",
			"targetResources":[{"id":"t1","modifiedProperties":[{"displayName":"a","newValue":"\"x\""},{"displayName":"b","newValue":null}]},
				{"id":"t2","modifiedProperties":[{"displayName":"c","newValue":"[\"y\"]"}]}]}}`)
	rf := NewRecordFields(map[string][]string{
		"azure.signin": {"ResultType", "AuthenticationProtocol", "DeviceDetail.IsCompliant", "devicedetail.browser",
			"status.errorcode", "appliedconditionalaccesspolicies", "identity.claims.ipaddr", "level", "long", "missing.path", "properties.resulttype",
			"targetresources.modifiedproperties.newvalue", "targetresources.id", "targetresources.missing"},
		"": {"properties.status.errorCode"},
	})
	signin := &event.Event{Source: "azure.signin"}
	other := &event.Event{Source: "azure.audit", Attrs: map[string]string{"kept": "yes"}}
	rf.Fill(rec, []*event.Event{signin, other})
	want := map[string]string{
		"rec.resulttype":                       "50126", // the top level first
		"rec.authenticationprotocol":           "ROPC",  // then under properties
		"rec.devicedetail.iscompliant":         "false",
		"rec.status.errorcode":                 "50126",
		"rec.appliedconditionalaccesspolicies": `[{"id":"p1","result":"notApplied"}]`,
		"rec.identity.claims.ipaddr":           "203.0.113.9",
		"rec.level":                            "4",
		"rec.long":                             long[:maxRecordValue],
		"rec.properties.resulttype":            "shadowed",
		"rec.properties.status.errorcode":      "50126",
		// through arrays: every element's, joined by newlines
		"rec.targetresources.modifiedproperties.newvalue": "\"x\"\n[\"y\"]",
		"rec.targetresources.id":                          "t1\nt2",
	}
	for k, v := range want {
		if signin.Attrs[k] != v {
			t.Errorf("signin attrs[%q] = %q, want %q", k, signin.Attrs[k], v)
		}
	}
	if len(signin.Attrs) != len(want) {
		t.Errorf("signin attrs = %v: null and missing paths must stay unset", signin.Attrs)
	}
	// Another source gets only the paths every source asks for.
	if len(other.Attrs) != 2 || other.Attrs["rec.properties.status.errorcode"] != "50126" || other.Attrs["kept"] != "yes" {
		t.Errorf("audit attrs = %v", other.Attrs)
	}

	// Properties sent as a JSON string holding the object, as some
	// Activity Log records do.
	ev := &event.Event{Source: "azure.activity"}
	NewRecordFields(map[string][]string{"azure.activity": {"entity", "eventcategory"}}).
		Fill([]byte(`{"properties":"{\"eventCategory\":\"Administrative\",\"Entity\":\"/subscriptions/x\"}"}`), []*event.Event{ev})
	if ev.Attrs["rec.entity"] != "/subscriptions/x" || ev.Attrs["rec.eventcategory"] != "Administrative" {
		t.Errorf("string properties: %v", ev.Attrs)
	}

	// No demand: the record is not even decoded, nothing is added.
	ev = &event.Event{Source: "azure.signin"}
	NewRecordFields(nil).Fill([]byte(`not json`), []*event.Event{ev})
	var nilRF *RecordFields
	nilRF.Fill(rec, []*event.Event{ev})
	if ev.Attrs != nil {
		t.Errorf("attrs added without demand: %v", ev.Attrs)
	}
}

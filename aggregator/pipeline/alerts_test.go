package pipeline

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/forwarder/receiver"
)

// An alert the SIEM received can be looked up by its externalId on the
// running appliance, with its evidence.
func TestAlertLookupByID(t *testing.T) {
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer siem.Close()
	cfg := testConfig(t, t.TempDir(), siem.Addr().String())
	cfg.HTTP.Listen = "127.0.0.1:0"
	p := start(t, cfg)
	for i := range 5 {
		send(t, "tcp", p.tcp, octet(sshFail(t0.Add(time.Duration(i)*time.Second), "192.0.2.9", 100+i)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := siem.Wait(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	id := regexp.MustCompile(`externalId=([0-9a-f]+)`).FindStringSubmatch(got[0])[1]

	resp, err := http.Get("http://" + p.HTTPAddr().String() + "/alerts/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a event.Alert
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatal(err)
	}
	if a.ID != id || a.RuleID != "ssh-brute-force" || a.Count != 5 || len(a.EventIDs) != 5 {
		t.Errorf("alert %+v", a)
	}
	resp, err = http.Get("http://" + p.HTTPAddr().String() + "/alerts/0000")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown id: %s", resp.Status)
	}
}

package pipeline

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/forwarder/receiver"
)

func TestStatusEndpoint(t *testing.T) {
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer siem.Close()
	cfg := testConfig(t, t.TempDir(), siem.Addr().String())
	cfg.HTTP.Listen = "127.0.0.1:0"
	p := start(t, cfg)
	send(t, "tcp", p.tcp, sshFail(t0, "198.51.100.7", 40000)+"\n")
	waitFor(t, "an event counted", func() bool { return p.Status().EventsIn >= 1 })
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + p.HTTPAddr().String() + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	if s.EventsIn < 1 || s.BytesIn < 1 || len(s.Destinations) != 1 || s.Destinations[0].Name != "siem" {
		t.Errorf("status: %+v", s)
	}
}

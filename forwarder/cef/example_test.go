package cef_test

import (
	"fmt"
	"log"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/forwarder/cef"
)

func ExampleEncoder_Append() {
	enc, err := cef.NewEncoder(cef.Options{Version: "1.0.0", DeviceExternalID: "outpost-dc1"})
	if err != nil {
		log.Fatal(err)
	}
	alert := &event.Alert{
		ID:        "b1f0a6d2c4e8",
		RuleID:    "ssh.bruteforce",
		Title:     "SSH brute force",
		Severity:  7,
		Tags:      []string{"T1110"},
		Kind:      "threshold",
		GroupBy:   []string{"src_ip"},
		Key:       "src_ip=203.0.113.5",
		Count:     5,
		FirstSeen: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC),
		LastSeen:  time.Date(2026, 11, 23, 10, 1, 30, 0, time.UTC),
		EventIDs:  []string{"e1", "e2", "e3", "e4", "e5"},
		Fields:    map[string]string{"src_ip": "203.0.113.5", "user": "root", "outcome": "failure"},
	}

	var buf []byte // reuse across alerts: buf = enc.Append(buf[:0], alert)
	buf = enc.Append(buf[:0], alert)
	fmt.Println(string(buf))
	fmt.Println("syslog severity:", cef.SyslogSeverity(alert.Severity))
	// Output:
	// CEF:0|Outpost|Outpost|1.0.0|ssh.bruteforce|SSH brute force|7|rt=1795428090000 start=1795428000000 end=1795428090000 cnt=5 externalId=b1f0a6d2c4e8 deviceExternalId=outpost-dc1 src=203.0.113.5 suser=root outcome=failure msg=5 events from src_ip\=203.0.113.5 between 2026-11-23T10:00:00Z and 2026-11-23T10:01:30Z cs1Label=Group Key cs1=src_ip\=203.0.113.5 cs2Label=Rule Kind cs2=threshold cs3Label=MITRE ATT&CK cs3=T1110 cs4Label=Evidence Event IDs cs4=e1,e2,e3,e4,e5
	// syslog severity: 3
}

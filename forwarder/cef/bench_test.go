package cef

import (
	"fmt"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

func BenchmarkAppend(b *testing.B) {
	first := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	many := map[string]string{
		"src_ip": "203.0.113.5", "src_port": "51234", "dst_ip": "2001:db8::10", "dst_port": "22",
		"user": "root", "host": "bastion", "outcome": "failure", "action": "logon", "protocol": "tcp", "app": "sshd",
	}
	for i := range 20 {
		many[fmt.Sprintf("sd.origin.attr%02d", i)] = fmt.Sprintf("value %d with = and \\ and\nnewline", i)
	}
	cases := []struct {
		name  string
		alert event.Alert
	}{
		{"small", event.Alert{
			ID: "b1f0a6d2c4e8", RuleID: "ssh.bruteforce", Title: "SSH brute force", Severity: 7,
			Kind: "threshold", Count: 5, FirstSeen: first, LastSeen: first.Add(90 * time.Second),
			GroupBy: []string{"src_ip"}, Key: "src_ip=203.0.113.5", Tags: []string{"T1110"},
			EventIDs: []string{"e1", "e2", "e3", "e4", "e5"},
			Fields:   map[string]string{"src_ip": "203.0.113.5", "user": "root", "outcome": "failure"},
		}},
		{"many_fields", event.Alert{
			ID: "b1f0a6d2c4e8", RuleID: "ssh.bruteforce", Title: "SSH brute force", Severity: 7,
			Description: "Five or more failed SSH logons from one source within 60s",
			Kind:        "threshold", Count: 100, FirstSeen: first, LastSeen: first.Add(90 * time.Second),
			GroupBy: []string{"src_ip", "user"}, Key: "src_ip=203.0.113.5;user=root", Tags: []string{"T1110", "T1110.001", "T1078"},
			EventIDs: manyIDs(100), Fields: many,
		}},
	}
	e := newTestEncoder(b, Options{DeviceExternalID: "outpost-dc1", DeviceHost: "agg01.example.net"})
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			buf := e.Append(nil, &c.alert)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				buf = e.Append(buf[:0], &c.alert)
			}
		})
	}
}

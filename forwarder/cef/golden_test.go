package cef

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// goldenAlerts are representative alerts; their encodings are pinned in
// testdata/<name>.golden, one line each.
var goldenAlerts = []struct {
	name  string
	opts  Options
	alert event.Alert
}{
	{
		name: "single_match",
		opts: Options{},
		alert: event.Alert{
			ID: "a-7f3c9e", RuleID: "defender.high", Title: "Defender high-severity alert",
			Description: "Microsoft Defender raised a high-severity alert", Severity: 8,
			Tags: []string{"attack.execution"}, Kind: "match", Count: 1,
			FirstSeen: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC),
			LastSeen:  time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC),
			EventIDs:  []string{"01JDX7Q6V3"},
			Fields:    map[string]string{"host": "ws-042", "user": "alice", "src_ip": "2001:db8::7", "action": "alert"},
		},
	},
	{
		name: "ssh_bruteforce",
		opts: Options{Vendor: "ACME", Product: "Outpost", Version: "1.4.0", DeviceExternalID: "outpost-dc1", DeviceHost: "agg01.example.net"},
		alert: event.Alert{
			ID: "b1f0a6d2c4e8", RuleID: "ssh.bruteforce", Title: "SSH brute force",
			Description: "Five or more failed SSH logons from one source within 60s", Severity: 7,
			Tags: []string{"T1110", "T1110.001"}, Kind: "threshold",
			GroupBy: []string{"src_ip"}, Key: "src_ip=203.0.113.5", Count: 5,
			FirstSeen: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC),
			LastSeen:  time.Date(2026, 11, 23, 10, 1, 30, 0, time.UTC),
			EventIDs:  []string{"e1", "e2", "e3", "e4", "e5"},
			Fields: map[string]string{
				"src_ip": "203.0.113.5", "src_port": "51234", "dst_ip": "10.0.0.10", "dst_port": "22",
				"user": "root", "host": "bastion", "outcome": "failure", "action": "logon",
				"protocol": "tcp", "app": "sshd", "category": "authentication",
			},
		},
	},
	{
		name: "hostile_input",
		opts: Options{Vendor: `Out|post`, Product: `Agg\regator`},
		alert: event.Alert{
			ID: "  c0ffee  ", RuleID: "web|sqli", Title: "SQL injection\r\nattempt | =",
			Description: "query had ' OR 1=1 --\nand a backslash \\ at the end\\", Severity: 12,
			Tags: []string{"T1190", " ", "T1059.007"}, Kind: "sequence",
			GroupBy: []string{"src_ip", "user"}, Key: "src_ip=198.51.100.9;user=mallory", Count: 3,
			LastSeen: time.Date(2026, 11, 23, 12, 30, 0, 500_000_000, time.UTC),
			EventIDs: []string{"x1", "", "x3"},
			Fields: map[string]string{
				"src_ip": "198.51.100.9", "dst_ip": "not-an-ip", "dst_port": "80/tcp",
				"user": "mallory=admin", "request": "/login?u=admin'--&p=x", "note": "multi\r\nline",
				"empty": "   ", "utf8": "naïve ☃ 🙂",
			},
		},
	},
}

func TestGolden(t *testing.T) {
	for _, g := range goldenAlerts {
		t.Run(g.name, func(t *testing.T) {
			e := newTestEncoder(t, g.opts)
			got := append(e.Append(nil, &g.alert), '\n')
			path := filepath.Join("testdata", g.name+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("reading golden file (run with -update to create it): %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("encoding differs from %s (run with -update if intended):\n got %s\nwant %s", path, got, want)
			}
			o := g.opts
			o.Vendor, o.Product, o.Version = cmpOr(o.Vendor, "Outpost"), cmpOr(o.Product, "Outpost"), cmpOr(o.Version, "dev")
			checkLine(t, o, &g.alert, bytes.TrimSuffix(got, []byte("\n")))
		})
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

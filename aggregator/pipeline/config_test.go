package pipeline

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "outpost.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The example config documents every key with its default: it must load,
// and loading must not change what it says.
func TestExampleConfigLoads(t *testing.T) {
	cfg, err := LoadConfig("../../deploy/outpost.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATS.Partitions != 16 || cfg.Windows.AllowedLateness != 2*time.Minute || cfg.Windows.LatenessFor("azure.signin") != 2*time.Hour || cfg.Ingest.Syslog.MaxMessageSize != 65507 {
		t.Errorf("example config values: %+v", cfg)
	}
	if _, err := LoadConfig("../../deploy/outpost.compose.yaml"); err != nil {
		t.Errorf("compose config: %v", err)
	}
}

func TestMinimalConfigGetsDefaults(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, `
data_dir: /tmp/x
ingest: {syslog: {tcp: ["127.0.0.1:5514"]}}
forwarder: {destinations: [{address: "127.0.0.1:6514"}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Listen != "127.0.0.1:9464" || cfg.Forwarder.Destinations[0].Framing != "lf" ||
		cfg.NATS.Streams.Events.MaxBytes != 8<<30 || cfg.NATS.Streams.Alerts.MaxAge != 7*24*time.Hour || !*cfg.State.SyncWrites {
		t.Errorf("defaults not applied: %+v", cfg)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []string
	}{
		{"unknown key names the key and line", "data_dir: /x\nnats:\n  urll: nats://x\n",
			[]string{"line 3: field urll not found"}},
		{"every problem at once", `
data_dir: ""
log: {level: chatty}
nats: {partitions: 0, replicas: 9}
ingest: {syslog: {tcp: ["nonsense"], max_message_size: 10}}
forwarder: {destinations: [{address: "", framing: newline}]}
`, []string{
			"data_dir: required",
			"log.level:",
			"nats.replicas:",
			"ingest.syslog.tcp",
			"ingest.syslog.max_message_size",
			"forwarder.destinations[siem].address: required",
			"forwarder.destinations[siem].framing:",
		}},
		{"bad size", "data_dir: /x\nnats: {streams: {events: {max_bytes: lots}}}\n", []string{`line 2: invalid size "lots"`}},
		{"bad duration", "data_dir: /x\nwindows: {allowed_lateness: soon}\n", []string{"soon"}},
		{"no listeners", "data_dir: /x\ningest: {syslog: {udp: [], tcp: []}}\nforwarder: {destinations: [{address: 'h:1'}]}\n",
			[]string{"ingest.syslog: no listeners"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadConfig(writeConfig(t, tt.body))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

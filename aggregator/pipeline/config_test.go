package pipeline

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/config"
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

// LoadConfig's problems are values a caller gets with errors.As, each with
// the key path apart from the message (validation) or the file and line
// (decoding): nothing to split or parse.
func TestConfigProblemsAsList(t *testing.T) {
	problems := func(t *testing.T, body string) []config.Problem {
		t.Helper()
		_, err := LoadConfig(writeConfig(t, body))
		var list *config.ErrorList
		if !errors.As(err, &list) {
			t.Fatalf("error %v (%T) carries no *config.ErrorList", err, err)
		}
		return list.Problems
	}

	t.Run("validation", func(t *testing.T) {
		got := problems(t, `
data_dir: /x
log: {level: chatty}
nats: {replicas: 9}
ingest: {syslog: {tcp: ["nonsense"]}}
windows: {cache_keys: -1, allowed_lateness: -1s}
state: {cache_size: 1KiB}
forwarder: {destinations: [{name: a, address: "h:1"}, {name: b, address: "", fallback: c}]}
`)
		var paths []string
		for _, p := range got {
			if p.File != "" || p.Line != 0 || p.Msg == "" || strings.HasPrefix(p.Msg, p.Path) {
				t.Errorf("problem %+v: want no file or line, and a message without the path", p)
			}
			paths = append(paths, p.Path)
		}
		want := []string{
			"log.level",
			"nats.replicas",
			"ingest.syslog.tcp[0]",
			"windows.allowed_lateness",
			"windows.cache_keys",
			"state.cache_size",
			"forwarder.destinations[b].address",
			"forwarder.destinations[b].fallback",
		}
		if !slices.Equal(paths, want) {
			t.Errorf("paths:\n%q\nwant:\n%q", paths, want)
		}
	})

	t.Run("decoding", func(t *testing.T) {
		got := problems(t, "data_dir: /x\nnats:\n  urll: nats://x\nwindows:\n  allowed_lateness: soon\n  bogus: 1\n")
		want := []struct {
			line int
			msg  string
		}{
			{3, "field urll not found in type bus.Config"},
			{5, "cannot unmarshal !!str `soon` into time.Duration"},
			{6, "field bogus not found in type window.Config"},
		}
		if len(got) != len(want) {
			t.Fatalf("%d problems, want %d: %+v", len(got), len(want), got)
		}
		for i, w := range want {
			if p := got[i]; p.Line != w.line || p.Msg != w.msg || !strings.HasSuffix(p.File, "outpost.yaml") || p.Path != "" {
				t.Errorf("problem %d: %+v, want line %d %q", i, p, w.line, w.msg)
			}
		}
	})
}

// With the embedded NATS server this process owns every partition of the
// windows, and the rule filter hands them its matches in process; with an
// external cluster MATCHES stays between them. Set, the key wins.
func TestFusedDefaultsToTheEmbeddedServer(t *testing.T) {
	for _, tc := range []struct {
		extra string
		want  bool
	}{
		{"", true},
		{"nats: {url: nats://127.0.0.1:4222}\n", false},
		{"windows: {fused: false}\n", false},
		{"nats: {url: nats://127.0.0.1:4222}\nwindows: {fused: true}\n", true},
	} {
		cfg, err := LoadConfig(writeConfig(t, `
data_dir: /tmp/x
ingest: {syslog: {tcp: ["127.0.0.1:5514"]}}
forwarder: {destinations: [{address: "127.0.0.1:6514"}]}
`+tc.extra))
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Windows.IsFused(); got != tc.want {
			t.Errorf("with %q: fused %t, want %t", tc.extra, got, tc.want)
		}
	}
}

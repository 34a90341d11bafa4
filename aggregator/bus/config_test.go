package bus

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// validateCase is a config and the error Validate must give ("" = none).
type validateCase struct {
	name string
	cfg  Config
	want string
}

func checkValidate(t *testing.T, cases []validateCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

// The client port is loopback-only unless TLS protects it, and the TLS
// settings are checked for what they need.
func TestValidateListen(t *testing.T) {
	checkValidate(t, []validateCase{
		{"no socket", Config{}, ""},
		{"loopback v4", Config{Listen: "127.0.0.1:4222"}, ""},
		{"loopback v6", Config{Listen: "[::1]:4222"}, ""},
		{"localhost", Config{Listen: "localhost:4222"}, ""},
		{"every interface", Config{Listen: "0.0.0.0:4222"}, "reachable off this machine"},
		{"empty host", Config{Listen: ":4222"}, "reachable off this machine"},
		{"lan address", Config{Listen: "10.0.0.4:4222"}, "reachable off this machine"},
		{"off loopback with tls", Config{Listen: "0.0.0.0:4222", TLS: ListenTLS{CertFile: "c.pem", KeyFile: "k.pem"}}, ""},
		{"cert without key", Config{Listen: "127.0.0.1:4222", TLS: ListenTLS{CertFile: "c.pem"}}, "go together"},
		{"ca without cert", Config{Listen: "127.0.0.1:4222", TLS: ListenTLS{ClientCAFile: "ca.pem"}}, "needs cert_file"},
		{"tls without listen", Config{TLS: ListenTLS{CertFile: "c.pem", KeyFile: "k.pem"}}, "only applies with nats.listen"},
	})
}

// nats.sync_interval reaches the embedded server, and is refused for an
// external one (it syncs as its own config says).
func TestSyncInterval(t *testing.T) {
	checkValidate(t, []validateCase{
		{"default", Config{}, ""},
		{"always", Config{SyncInterval: "always"}, ""},
		{"duration", Config{SyncInterval: "30s"}, ""},
		{"too short", Config{SyncInterval: "10ms"}, "at least 1s"},
		{"nonsense", Config{SyncInterval: "often"}, "must be \"always\" or a duration"},
		{"external", Config{URL: "nats://127.0.0.1:4222", SyncInterval: "always"}, "only applies to the embedded server"},
	})
	for _, c := range []struct {
		set    string
		always bool
		every  time.Duration
	}{{"always", true, 0}, {"30s", false, 30 * time.Second}, {"", false, 2 * time.Minute}} {
		cfg := Config{SyncInterval: c.set}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		b, err := Open(context.Background(), cfg, t.TempDir(), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		js := b.server.JetStreamConfig()
		b.Close()
		if js == nil || js.SyncAlways != c.always || (c.every != 0 && js.SyncInterval != c.every) {
			t.Errorf("sync_interval %q: the server runs with %+v", c.set, js)
		}
	}
}

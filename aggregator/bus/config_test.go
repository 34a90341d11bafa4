package bus

import (
	"strings"
	"testing"
)

// The client port is loopback-only unless TLS protects it, and the TLS
// settings are checked for what they need.
func TestValidateListen(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want string // "" = valid
	}{
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
	} {
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

package pipeline

import (
	"context"
	"strings"
	"testing"
)

// TestOpenConflicts opens a second appliance on what a first one holds:
// Open must return the real error, not panic in its cleanup.
func TestOpenConflicts(t *testing.T) {
	first := testConfig(t, t.TempDir(), "127.0.0.1:9")
	p, err := Open(context.Background(), first, "test", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	_, tcp := p.SyslogAddrs()

	sameDir := testConfig(t, first.DataDir, "127.0.0.1:9")
	samePort := testConfig(t, t.TempDir(), "127.0.0.1:9")
	samePort.Ingest.Syslog.TCP = []string{tcp[0].String()}
	for _, tc := range []struct {
		name string
		cfg  *Config
		want string
	}{
		{"same data dir", sameDir, "opening state"},
		{"same syslog port", samePort, tcp[0].String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				q   *Pipeline
				err error
			)
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("Open panicked: %v", r)
					}
				}()
				q, err = Open(context.Background(), tc.cfg, "test", testLogger(t))
			}()
			if err == nil {
				q.close()
				t.Fatal("second Open succeeded")
			}
			if q != nil {
				t.Errorf("Open returned a pipeline with its error")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

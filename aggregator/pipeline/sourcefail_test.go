package pipeline

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/ingest/azureblob"
)

// TestBadAzureAccountIsIsolated: an Azure account whose connection string
// (read from the environment at run time, so check-config cannot see it)
// is malformed must not stop the appliance: syslog keeps flowing through
// every stage, and the failing source is reported and retried.
func TestBadAzureAccountIsIsolated(t *testing.T) {
	t.Setenv("OUTPOST_TEST_BAD_CS", "this is not a connection string")
	cfg := testConfig(t, t.TempDir(), "127.0.0.1:9")
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Ingest.AzureBlob = azureblob.Config{Accounts: []azureblob.Account{{
		Name: "bad", Auth: azureblob.AuthConnectionString,
		ConnectionString: azureblob.Secret{Env: "OUTPOST_TEST_BAD_CS"},
		Containers:       []azureblob.Container{{Name: "insights-logs-signinlogs"}},
	}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := Open(ctx, cfg, "test", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	_, tcp := p.SyslogAddrs()
	r := &running{Pipeline: p, tcp: tcp[0].String()}

	select {
	case err := <-done:
		t.Fatalf("the appliance stopped: %v", err)
	case <-time.After(time.Second):
	}
	send(t, "tcp", r.tcp, sshFail(t0, "203.0.113.9", 40000)+"\n")
	r.waitSettled(t, 1)
	waitFor(t, "the failing source reported", func() bool {
		pr := p.Status().Problems
		return len(pr) == 1 && strings.Contains(pr[0], "azure_blob") &&
			r.counter("outpost_source_failures_total") >= 1
	})
	// Syslog still works, so the appliance stays ready; /readyz says what
	// is degraded.
	if code, body := readyz(t, r); code != http.StatusOK || !strings.Contains(body, "degraded") || !strings.Contains(body, "azure_blob") {
		t.Errorf("/readyz with a failing source: %d %q, want 200 naming the degraded azure_blob source", code, body)
	}
	if pr := p.Status().Problems; strings.Contains(pr[0], "this is not") {
		t.Errorf("the problem quotes the secret: %q", pr[0])
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

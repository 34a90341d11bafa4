package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-siem/outpost/aggregator/ingest/syslog"
	"github.com/outpost-siem/outpost/aggregator/pipeline"
	"github.com/outpost-siem/outpost/forwarder"
)

// TestStatusCommand: `outpost status` prints the page's top row from
// /api/console, with the token when the endpoint needs one.
func TestStatusCommand(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("# ops\nstatus-0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &pipeline.Config{DataDir: filepath.Join(dir, "data")}
	cfg.HTTP = pipeline.HTTPConfig{Listen: "127.0.0.1:0", TokenFile: tokens}
	cfg.Ingest.Syslog = syslog.Config{UDP: []string{}, TCP: []string{"127.0.0.1:0"}}
	cfg.Forwarder = forwarder.Config{Destinations: []forwarder.Destination{{Name: "siem", Address: "127.0.0.1:9"}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.Open(context.Background(), cfg, "status-test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	addr := p.HTTPAddr().String()

	out, err := execute("status", "--addr", addr)
	if err == nil || !strings.Contains(err.Error(), "wants authentication") {
		t.Errorf("without a token: %v\n%s", err, out)
	}
	out, err = execute("status", "--addr", addr, "--token-file", tokens)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"(outpost status-test, up ", "in:   0 events", "stale sources: 0", "siem", "127.0.0.1:9"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

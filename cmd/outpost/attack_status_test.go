package main

// The TestAttack* tests in this file come from an adversarial review. Those
// named after a finding failed when written and now hold its fix (the
// "Finding:" comments describe the behaviour before it); those ending in
// Holds are what the review tried and found already safe.

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const attackStatusChild = "OUTPOST_ATTACK_STATUS_CHILD"

// TestAttackStatusChild is TestAttackStatusTokenInClear's child process:
// `outpost status` run with the parent's arguments and proxy environment
// (a fresh process, as net/http reads the proxy variables once).
func TestAttackStatusChild(t *testing.T) {
	if os.Getenv(attackStatusChild) == "" {
		t.Skip("run by TestAttackStatusTokenInClear")
	}
	out, err := execute(strings.Split(os.Getenv(attackStatusChild), "\n")...)
	os.Stdout.WriteString(out)
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(3)
	}
}

// TestAttackStatusTokenInClear: `outpost status --addr HOST:PORT
// --token-file F` puts a bare address behind http:// and sends the bearer
// token over plain HTTP to any host, not only to loopback, with no
// warning; everyone on the path (here a proxy from HTTP_PROXY, on
// 127.0.0.1: the test reaches no other address) reads the token. The
// server refuses to listen off loopback without TLS; the client should
// refuse to send a token over plain HTTP off loopback too.
func TestAttackStatusTokenInClear(t *testing.T) {
	const token = "status-0123456789abcdef0123456789abcdef"
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.RequestURI+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"top":{"ready":true}}`))
	}))
	proxy.Listener = ln
	proxy.Start()
	defer proxy.Close()

	// 203.0.113.0/24 is TEST-NET-3: never reached, the proxy answers.
	for _, addr := range []string{"203.0.113.7:9464", "http://outpost.example:9464"} {
		t.Run(addr, func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestAttackStatusChild$", "-test.count=1")
			cmd.Env = append(os.Environ(),
				attackStatusChild+"="+strings.Join([]string{"status", "--addr", addr, "--token-file", tokens}, "\n"),
				"HTTP_PROXY="+proxy.URL, "http_proxy="+proxy.URL, "NO_PROXY=", "no_proxy=")
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 3) {
				t.Fatalf("the child did not run: %v\n%s", err, out)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, s := range seen {
				if strings.Contains(s, token) {
					t.Errorf("`outpost status --addr %s` sent the token in clear text: the proxy saw %q\n%s", addr, s, out)
				}
			}
		})
	}
}

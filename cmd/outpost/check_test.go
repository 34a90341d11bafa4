package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/ingest/syslog/tlstest"
)

// TestCheckConfigDeployment: check-config also checks what the machine
// gives the config — TLS material that loads and matches, a writable
// data_dir, listen addresses that can be bound, names that resolve — one
// line each, and fails on what would keep Outpost from starting.
func TestCheckConfigDeployment(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "test")
	cert, key := ca.Valid("syslog", "outpost.test", true)
	_, otherKey := ca.Valid("other", "other.test", true)
	oldCert, oldKey := ca.Issue("old", "old.test", true, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
	held, err := net.Listen("tcp", "127.0.0.1:0") // an address in use
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	write := func(tls string) string {
		cfg := fmt.Sprintf(`data_dir: %s
http: {listen: "127.0.0.1:0"}
ingest:
  syslog:
    udp: ["127.0.0.1:0"]
    tcp: [%q]
    tls:
%s
forwarder: {destinations: [{address: "localhost:6514"}]}
`, filepath.Join(dir, "data"), held.Addr().String(), tls)
		path := filepath.Join(dir, "outpost.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	tlsListener := func(cert, key string) string {
		return fmt.Sprintf("      - {listen: \"127.0.0.1:0\", cert_file: %q, key_file: %q, client_ca_file: %q}", cert, key, ca.File)
	}

	out, err := execute("check-config", "-c", write(tlsListener(cert, key)))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{
		"ok    data_dir: " + filepath.Join(dir, "data") + " does not exist yet; " + dir + ", where it will be created, is writable",
		"ok    ingest.syslog.tls[0]: " + cert + ` and its key load; serves "outpost.test" until `,
		"ok    ingest.syslog.udp[0]: 127.0.0.1:0/udp can be bound",
		"warn  ingest.syslog.tcp[0]: " + held.Addr().String() + "/tcp is in use",
		"ok    ingest.syslog.tls[0].listen: 127.0.0.1:0/tcp can be bound",
		"ok    http.listen: 127.0.0.1:0/tcp can be bound",
		"ok    forwarder.destinations[0].address: localhost resolves to",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// A key that is not the certificate's fails (the listener would not
	// start); an expired certificate is a warning (Outpost starts, its
	// other listeners work, no client connects to this one); a key every
	// user can read is a warning.
	for _, tc := range []struct {
		cert, key, want string
		fails           bool
	}{
		{cert, otherKey, "fail  ingest.syslog.tls[0]: cert_file " + cert + " and key_file " + otherKey + ": tls: private key does not match public key", true},
		{oldCert, oldKey, "warn  ingest.syslog.tls[0]: cert_file " + oldCert + ": the certificate expired at ", false},
	} {
		out, err := execute("check-config", "-c", write(tlsListener(tc.cert, tc.key)))
		if tc.fails != (err != nil && strings.Contains(err.Error(), "the deployment does not give Outpost what the config needs")) {
			t.Errorf("check-config: %v\n%s", err, out)
		}
		if !strings.Contains(out, tc.want) {
			t.Errorf("output lacks %q:\n%s", tc.want, out)
		}
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = execute("check-config", "-c", write(tlsListener(cert, key)))
	if err != nil || !strings.Contains(out, "warn  ingest.syslog.tls[0].key_file: "+key+" is readable by every user (mode -rw-r--r--): chmod o-r") {
		t.Errorf("%v\n%s", err, out)
	}
	// --static leaves the machine alone.
	out, err = execute("check-config", "--static", "-c", write(tlsListener(cert, otherKey)))
	if err != nil || strings.Contains(out, "ingest.syslog.tls[0]") {
		t.Errorf("--static: %v\n%s", err, out)
	}
}

// check-config checks the HTTP endpoint's files too: Outpost would not
// start on a token file it refuses.
func TestCheckConfigHTTPFiles(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`data_dir: %s
http: {listen: "127.0.0.1:0", token_file: %q}
ingest: {syslog: {udp: [], tcp: ["127.0.0.1:0"]}}
forwarder: {destinations: [{address: "127.0.0.1:6514"}]}
`, filepath.Join(dir, "data"), tokens)
	path := filepath.Join(dir, "outpost.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := execute("check-config", "-c", path)
	if err == nil || !strings.Contains(out, "fail  http.token_file: http.token_file "+tokens+" line 1: a token must be at least 32 characters") {
		t.Errorf("%v\n%s", err, out)
	}
	if err := os.WriteFile(tokens, []byte("# ops\n0123456789abcdef0123456789abcdef-check\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = execute("check-config", "-c", path)
	if err != nil || !strings.Contains(out, "ok    http.token_file: "+tokens+" holds 1 token(s)") {
		t.Errorf("%v\n%s", err, out)
	}
}

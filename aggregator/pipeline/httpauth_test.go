package pipeline

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/config"
	"github.com/outpost-siem/outpost/aggregator/ingest/syslog/tlstest"
	"github.com/outpost-siem/outpost/forwarder/receiver"
)

const testToken = "tok-0123456789abcdef0123456789abcdef"

// everyPath is every endpoint the HTTP server has, but the health checks.
var everyPath = []string{"/", "/assets/app.js", "/api/console", "/status", "/metrics", "/alerts/nope"}

// TestHTTPNeedsAToken: with a token file, every endpoint but the health
// checks (and the sign-in form) answers 401 without a token or with a
// wrong one, and serves with the right one, by header or session cookie;
// the token never appears in what is served; the profiler is 404 unless
// http.pprof.
func TestHTTPNeedsAToken(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("# ops\n\n"+testToken+"\nother-0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer siem.Close()
	cfg := testConfig(t, filepath.Join(dir, "data"), siem.Addr().String())
	cfg.HTTP = HTTPConfig{Listen: "127.0.0.1:0", TokenFile: tokens}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	p := start(t, cfg)
	base := "http://" + p.HTTPAddr().String()
	client := &http.Client{Timeout: 20 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path, auth string, cookie *http.Cookie) (int, string) {
		req, _ := http.NewRequest("GET", base+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, path := range []string{"/healthz", "/readyz", "/login"} {
		if code, _ := get(path, "", nil); code != http.StatusOK {
			t.Errorf("%s without a token: %d, want 200", path, code)
		}
	}
	for _, path := range everyPath {
		for _, auth := range []string{"", "Bearer wrong-0123456789abcdef0123456789abcdef", "Basic " + testToken, "Bearer "} {
			code, _ := get(path, auth, nil)
			want := http.StatusUnauthorized
			if path == "/" && auth == "" {
				want = http.StatusSeeOther // to /login
			}
			if path == "/" && auth != "" {
				want = http.StatusSeeOther
			}
			if code != want {
				t.Errorf("%s with %q: %d, want %d", path, auth, code, want)
			}
		}
		code, body := get(path, "bearer "+testToken, nil)
		want := http.StatusOK
		if path == "/alerts/nope" {
			want = http.StatusNotFound // authenticated, and there is no such alert
		}
		if code != want {
			t.Errorf("%s with the token: %d, want %d", path, code, want)
		}
		if strings.Contains(body, testToken) {
			t.Errorf("%s serves the token", path)
		}
	}
	if code, _ := get("/debug/pprof/", "Bearer "+testToken, nil); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without http.pprof: %d, want 404", code)
	}

	// The browser's way: /login sets a session cookie.
	resp, err := client.PostForm(base+"/login", url.Values{"token": {testToken}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			session = c
		}
	}
	if resp.StatusCode != http.StatusSeeOther || session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode {
		t.Fatalf("sign-in: %s, cookie %+v", resp.Status, session)
	}
	if code, _ := get("/api/console", "", session); code != http.StatusOK {
		t.Errorf("/api/console with the session: %d", code)
	}
	resp, err = client.PostForm(base+"/login", url.Values{"token": {"wrong"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Errorf("a wrong sign-in: %s, cookies %v", resp.Status, resp.Cookies())
	}
}

// TestHTTPClientCertificates: over TLS with client_ca_file, a client
// certificate from that CA naming one of client_names is enough (another
// name from the same CA is not); without one (and without a token)
// it is 401; the profiler is served when http.pprof is on.
func TestHTTPClientCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "ops")
	cert, key := ca.Valid("http", "outpost.test", true)
	clientCert, clientKey := ca.Valid("operator", "operator.test", false)
	otherCert, otherKey := ca.Valid("sender", "sender.test", false) // the same CA, another name
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer siem.Close()
	cfg := testConfig(t, filepath.Join(dir, "data"), siem.Addr().String())
	cfg.HTTP = HTTPConfig{Listen: "127.0.0.1:0", PProf: true, TLS: HTTPTLS{CertFile: cert, KeyFile: key, ClientCAFile: ca.File,
		ClientNames: []string{"operator.test"}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	p := start(t, cfg)
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(ca.File)
	pool.AppendCertsFromPEM(pem)
	clientFor := func(withCert bool) *http.Client {
		tc := &tls.Config{RootCAs: pool, ServerName: "outpost.test"}
		if withCert {
			c, err := tls.LoadX509KeyPair(clientCert, clientKey)
			if err != nil {
				t.Fatal(err)
			}
			tc.Certificates = []tls.Certificate{c}
		}
		return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	}
	// A certificate of the same CA that client_names does not name: not let in.
	other, err := tls.LoadX509KeyPair(otherCert, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	otherClient := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool,
		ServerName: "outpost.test", Certificates: []tls.Certificate{other}}}}
	if resp, err := otherClient.Get("https://" + p.HTTPAddr().String() + "/api/console"); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a certificate not in client_names: %d, want 401", resp.StatusCode)
	}
	base := "https://" + p.HTTPAddr().String()
	for _, tc := range []struct {
		path     string
		withCert bool
		want     int
	}{
		{"/api/console", true, 200}, {"/metrics", true, 200}, {"/debug/pprof/", true, 200},
		{"/api/console", false, 401}, {"/metrics", false, 401}, {"/debug/pprof/", false, 401},
		{"/healthz", false, 200},
	} {
		resp, err := clientFor(tc.withCert).Get(base + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s with a certificate %v: %d, want %d", tc.path, tc.withCert, resp.StatusCode, tc.want)
		}
	}
}

// TestHTTPOffLoopbackNeedsAuth: a listen address off loopback without TLS
// and authentication is a config error; with them it is accepted.
func TestHTTPOffLoopbackNeedsAuth(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    HTTPConfig
		want string
	}{
		{"every interface, nothing", HTTPConfig{Listen: "0.0.0.0:9464"}, "is not loopback"},
		{"an address, a token but no TLS", HTTPConfig{Listen: "10.0.0.4:9464", TokenFile: "/t"}, "is not loopback"},
		{"TLS but no auth", HTTPConfig{Listen: "[::]:9464", TLS: HTTPTLS{CertFile: "c", KeyFile: "k"}}, "is not loopback"},
		{"TLS and a token", HTTPConfig{Listen: "0.0.0.0:9464", TokenFile: "/t", TLS: HTTPTLS{CertFile: "c", KeyFile: "k"}}, ""},
		{"TLS and client certificates", HTTPConfig{Listen: "0.0.0.0:9464", TLS: HTTPTLS{CertFile: "c", KeyFile: "k", ClientCAFile: "ca"}}, ""},
		{"loopback, nothing", HTTPConfig{Listen: "127.0.0.1:9464"}, ""},
		{"localhost", HTTPConfig{Listen: "localhost:9464"}, ""},
		{"::1", HTTPConfig{Listen: "[::1]:9464"}, ""},
		{"a CA without TLS", HTTPConfig{Listen: "127.0.0.1:9464", TLS: HTTPTLS{ClientCAFile: "ca"}}, "needs cert_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var errs config.Errors
			h := tc.h
			h.validate(&errs)
			err := errs.Err()
			if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	// A token file others can read, or with a short token, is refused.
	dir := t.TempDir()
	for _, tc := range []struct{ body, want string }{
		{testToken + "\n", "readable by every user"},
		{"short\n", "at least 32 characters"},
		{"# nothing\n", "holds no token"},
	} {
		f := filepath.Join(dir, "tokens")
		mode := os.FileMode(0o600)
		if tc.want == "readable by every user" {
			mode = 0o644
		}
		os.Remove(f)
		if err := os.WriteFile(f, []byte(tc.body), mode); err != nil {
			t.Fatal(err)
		}
		if _, err := loadTokens(f); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q (mode %v): %v, want %q", tc.body, mode, err, tc.want)
		}
	}
}

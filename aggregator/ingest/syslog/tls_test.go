package syslog

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/ingest/syslog/tlstest"
)

// tlsFixture is a CA, a server certificate from it, and a client
// certificate "sender-1" from it.
type tlsFixture struct {
	ca                   *tlstest.CA
	serverCert, srvKey   string
	clientCert, clientKy string
}

func newTLSFixture(t *testing.T) *tlsFixture {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "outpost-test")
	f := &tlsFixture{ca: ca}
	f.serverCert, f.srvKey = ca.Valid("server", "outpost.test", true)
	f.clientCert, f.clientKy = ca.Valid("sender-1", "sender-1.test", false)
	return f
}

// client returns a TLS client config trusting the fixture's CA, with the
// given client certificate files (none if empty).
func (f *tlsFixture) client(t *testing.T, certFile, keyFile string) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	pemCA, _ := os.ReadFile(f.ca.File)
	pool.AppendCertsFromPEM(pemCA)
	c := &tls.Config{RootCAs: pool, ServerName: "outpost.test"}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		// Sent even when the server asks for another CA's (a Go client
		// would otherwise send none).
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return c
}

func (ts *testSource) tlsAddr() string { return ts.ListenAddrs("tls")[0].String() }

// dialTLS connects and finishes the handshake; the error is the client's.
func dialTLS(t *testing.T, addr string, c *tls.Config) (*tls.Conn, error) {
	t.Helper()
	d := &net.Dialer{Timeout: waitFor}
	conn, err := tls.DialWithDialer(d, "tcp", addr, c)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.Close() })
	// TLS 1.3: the server's verdict on the client certificate comes after
	// the client's handshake ends; a read shows it.
	conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	_, err = conn.Read(make([]byte, 1))
	conn.SetReadDeadline(time.Time{})
	if err != nil && !os.IsTimeout(err) {
		return nil, err
	}
	return conn, nil
}

func TestTLSListener(t *testing.T) {
	f := newTLSFixture(t)
	sink := &memSink{}
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{}, MaxMessageSize: 480,
		TLS: []TLSListener{{Listen: "127.0.0.1:0", TLSFiles: TLSFiles{CertFile: f.serverCert, KeyFile: f.srvKey}}}}, sink)
	c, err := dialTLS(t, ts.tlsAddr(), f.client(t, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	// RFC 5425 octet-counted, and an LF-framed one as TCP accepts.
	msg := "<34>1 2026-12-04T10:00:00Z web-1 sshd 42 - - Failed password for root from 127.0.0.9 port 4711 ssh2"
	write(t, c, octet(msg)+"<13>Dec  4 10:00:01 web-2 app: plain LF frame\n")
	evs, _ := sink.wait(t, 2, 0)
	if evs[0].Host != "web-1" || evs[1].Message != "plain LF frame" {
		t.Fatalf("events: %+v / %+v", evs[0], evs[1])
	}
	if n := ts.metric(t, "outpost_component_received_events_total", map[string]string{"transport": "tls"}); n != 2 {
		t.Fatalf("tls events counted: %v", n)
	}
	if n := ts.metric(t, "outpost_syslog_tls_certificate_expiry_timestamp_seconds", map[string]string{"listener": "127.0.0.1:0"}); n < float64(time.Now().Unix()) {
		t.Fatalf("expiry gauge: %v", n)
	}
	// An oversized frame is dead-lettered, as on TCP.
	write(t, c, octet(strings.Repeat("x", 600)))
	if _, dls := sink.wait(t, 2, 1); !strings.HasPrefix(dls[0].reason, KindOversize) {
		t.Fatalf("dead letter: %q", dls[0].reason)
	}
}

// TestTLSRefusals: each way a client can fail the handshake is refused
// and counted under its reason, and none disturbs a connection that is
// already streaming.
func TestTLSRefusals(t *testing.T) {
	f := newTLSFixture(t)
	dir := t.TempDir()
	other := tlstest.NewCA(t, dir, "someone-else")
	strangerCert, strangerKey := other.Valid("stranger", "sender-1.test", false)
	expiredCert, expiredKey := f.ca.Issue("expired", "sender-1.test", false, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	unlistedCert, unlistedKey := f.ca.Valid("unlisted", "sender-9.test", false)

	sink := &memSink{}
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{}, HandshakeTimeout: 300 * time.Millisecond,
		TLS: []TLSListener{{Listen: "127.0.0.1:0", TLSFiles: TLSFiles{CertFile: f.serverCert, KeyFile: f.srvKey,
			ClientCAFile: f.ca.File, ClientNames: []string{"SENDER-1.test"}}}}}, sink)
	addr := ts.tlsAddr()

	good, err := dialTLS(t, addr, f.client(t, f.clientCert, f.clientKy))
	if err != nil {
		t.Fatalf("an allowed client: %v", err)
	}
	write(t, good, octet("<13>Dec  4 10:00:00 h app: before"))
	sink.wait(t, 1, 0)

	cases := []struct {
		name, reason string
		try          func() error
	}{
		{"no client certificate", tlsNoClientCert, func() error { _, err := dialTLS(t, addr, f.client(t, "", "")); return err }},
		{"another CA", tlsUnknownCA, func() error {
			_, err := dialTLS(t, addr, f.client(t, strangerCert, strangerKey))
			return err
		}},
		{"expired", tlsExpired, func() error { _, err := dialTLS(t, addr, f.client(t, expiredCert, expiredKey)); return err }},
		{"not in client_names", tlsNotAllowed, func() error {
			_, err := dialTLS(t, addr, f.client(t, unlistedCert, unlistedKey))
			return err
		}},
		{"the client does not trust the server", tlsRemoteRefused, func() error {
			c := f.client(t, f.clientCert, f.clientKy)
			c.RootCAs = x509.NewCertPool()
			_, err := dialTLS(t, addr, c)
			return err
		}},
		{"plaintext syslog", tlsNotTLS, func() error {
			c := dial(t, "tcp", addr)
			write(t, c, "<13>Dec  4 10:00:00 h app: plain\n")
			expectClosed(t, c)
			return nil
		}},
		{"TLS 1.2 to a 1.3 minimum", "", nil}, // a separate listener below
		{"a handshake that never finishes", tlsTimeout, func() error {
			c := dial(t, "tcp", addr)
			expectClosed(t, c)
			return nil
		}},
	}
	for _, tc := range cases {
		if tc.try == nil {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			before := ts.metric(t, "outpost_syslog_tls_handshake_errors_total", map[string]string{"reason": tc.reason})
			if err := tc.try(); err == nil && tc.reason != tlsNotTLS && tc.reason != tlsTimeout {
				t.Fatal("the handshake succeeded")
			}
			waitUntil(t, func() bool {
				return ts.metric(t, "outpost_syslog_tls_handshake_errors_total", map[string]string{"reason": tc.reason}) == before+1
			})
		})
	}
	// The streaming connection was not disturbed.
	write(t, good, octet("<13>Dec  4 10:00:01 h app: after"))
	evs, _ := sink.wait(t, 2, 0)
	if got := messages(evs); got[1] != "after" || len(got) != 2 {
		t.Fatalf("events: %q", got)
	}
}

func TestTLSMinVersion(t *testing.T) {
	f := newTLSFixture(t)
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{},
		TLS: []TLSListener{{Listen: "127.0.0.1:0", TLSFiles: TLSFiles{CertFile: f.serverCert, KeyFile: f.srvKey, MinVersion: "1.3"}}}}, &memSink{})
	c := f.client(t, "", "")
	c.MaxVersion = tls.VersionTLS12
	if _, err := dialTLS(t, ts.tlsAddr(), c); err == nil {
		t.Fatal("a TLS 1.2 client was accepted by a 1.3 listener")
	}
	waitUntil(t, func() bool {
		return ts.metric(t, "outpost_syslog_tls_handshake_errors_total", map[string]string{"reason": tlsVersion}) == 1
	})
}

// TestTLSCertificateSwap: a certificate renewed on disk is used by the next
// connection, without a signal, and the established one keeps streaming; a
// pair that does not load (half written) leaves the old one in use.
func TestTLSCertificateSwap(t *testing.T) {
	f := newTLSFixture(t)
	sink := &memSink{}
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{},
		TLS: []TLSListener{{Listen: "127.0.0.1:0", TLSFiles: TLSFiles{CertFile: f.serverCert, KeyFile: f.srvKey}}}}, sink)
	addr := ts.tlsAddr()
	old, err := dialTLS(t, addr, f.client(t, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	serialOf := func(c *tls.Conn) int64 { return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64() }
	first := serialOf(old)

	// Renewal: a new certificate and key, each renamed into place.
	f.ca.Valid("server", "outpost.test", true)
	var renewed int64
	waitUntil(t, func() bool {
		c, err := dialTLS(t, addr, f.client(t, "", ""))
		if err != nil {
			return false
		}
		renewed = serialOf(c)
		c.Close()
		return renewed != first
	})
	if n := ts.metric(t, "outpost_syslog_tls_reloads_total", map[string]string{"result": "ok"}); n < 1 {
		t.Fatalf("reloads counted: %v", n)
	}
	write(t, old, octet("<13>Dec  4 10:00:00 h app: still here"))
	sink.wait(t, 1, 0)

	// A key that does not match the certificate: the reload fails, the
	// listener keeps the renewed pair.
	_, otherKey := f.ca.Valid("other", "x.test", true)
	data, _ := os.ReadFile(otherKey)
	if err := os.WriteFile(f.srvKey, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ts.ReloadTLS(); err == nil || !strings.Contains(err.Error(), "private key does not match") {
		t.Fatalf("ReloadTLS with a mismatched key: %v", err)
	}
	c, err := dialTLS(t, addr, f.client(t, "", ""))
	if err != nil || serialOf(c) != renewed {
		t.Fatalf("after a failed reload: %v", err)
	}
	if !strings.Contains(ts.logs.String(), "TLS files not reloaded") {
		t.Fatalf("the failed reload was not logged:\n%s", ts.logs.String())
	}
}

func TestTLSConfigErrors(t *testing.T) {
	f := newTLSFixture(t)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no cert", Config{TLS: []TLSListener{{Listen: "127.0.0.1:0"}}}, "ingest.syslog.tls[0].cert_file: required"},
		{"bad version", Config{TLS: []TLSListener{{Listen: "127.0.0.1:0", TLSFiles: TLSFiles{CertFile: "a", KeyFile: "b", MinVersion: "1.1"}}}},
			`ingest.syslog.tls[0].min_version: must be "1.2" or "1.3"`},
		{"names without CA", Config{TLS: []TLSListener{{Listen: "127.0.0.1:0", TLSFiles: TLSFiles{CertFile: "a", KeyFile: "b", ClientNames: []string{"x"}}}}},
			"client_names: needs client_ca_file"},
		{"port twice", Config{TCP: []string{"127.0.0.1:6514"}, TLS: []TLSListener{{Listen: "127.0.0.1:6514", TLSFiles: TLSFiles{CertFile: "a", KeyFile: "b"}}}},
			"already a tcp, tls or relp listener"},
		{"relp tls", Config{RELP: []RELPListener{{Listen: "127.0.0.1:0", TLS: &TLSFiles{}}}}, "ingest.syslog.relp[0].tls.cert_file: required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	// Files that do not load fail New, naming the listener.
	_, err := New(Config{TLS: []TLSListener{{Listen: "127.0.0.1:0", TLSFiles: TLSFiles{CertFile: f.serverCert, KeyFile: f.clientKy}}}}, &memSink{}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "TLS listener 127.0.0.1:0") {
		t.Fatalf("mismatched key: %v", err)
	}
	// tls: [] and relp: [] (as the example config writes them) are not
	// listeners: the plain defaults still apply.
	c0 := Config{TLS: []TLSListener{}, RELP: []RELPListener{}}
	if err := c0.Validate(); err != nil || len(c0.UDP) != 1 || len(c0.TCP) != 1 {
		t.Fatalf("defaults with tls: [] and relp: []: %v udp=%v tcp=%v", err, c0.UDP, c0.TCP)
	}
	// Only TLS configured: no plain listener is opened by default.
	c := Config{TLS: []TLSListener{{Listen: "127.0.0.1:0", TLSFiles: TLSFiles{CertFile: "a", KeyFile: "b"}}}}
	if err := c.Validate(); err != nil || c.UDP != nil || c.TCP != nil {
		t.Fatalf("defaults with tls only: %v udp=%v tcp=%v", err, c.UDP, c.TCP)
	}
}

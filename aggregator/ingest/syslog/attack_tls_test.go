package syslog

// The TestAttack* tests in this file come from an adversarial review. Those
// named after a finding failed when written and now hold its fix (the
// "Finding:" comments describe the behaviour before it); those ending in
// Holds are what the review tried and found already safe.

// Attack tests of the TLS listeners (syslog over TLS, RELP over TLS): a
// TestAttack that fails is a finding (see its comment); one that passes
// is a regression test of an attack the code holds against.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/ingest/syslog/tlstest"
)

// forgeCA is a CA that issues whatever certificate a test describes (the
// names tlstest will not write: non-ASCII common names, no names, URIs).
type forgeCA struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newForgeCA(t *testing.T) *forgeCA {
	t.Helper()
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "forge-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &forgeCA{t: t, dir: dir, cert: cert, key: key, file: filepath.Join(dir, "forge-ca.pem")}
	tlstest.WritePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue signs tmpl (a client certificate unless it says otherwise) and
// returns it as a tls.Certificate.
func (ca *forgeCA) issue(tmpl *x509.Certificate) tls.Certificate {
	ca.t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	if tmpl.ExtKeyUsage == nil {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// mtlsSource runs a TLS listener whose clients must chain to ca and be
// named in names; the server certificate is the fixture's.
func mtlsSource(t *testing.T, f *tlsFixture, ca *forgeCA, names ...string) *testSource {
	return startSource(t, Config{UDP: []string{}, TCP: []string{}, HandshakeTimeout: 2 * time.Second,
		TLS: []TLSListener{{Listen: "127.0.0.1:0", TLSFiles: TLSFiles{CertFile: f.serverCert, KeyFile: f.srvKey,
			ClientCAFile: ca.file, ClientNames: names}}}}, &memSink{})
}

// admitted says whether a client presenting cert gets through the
// handshake (the server's verdict included: dialTLS reads after it).
func admitted(t *testing.T, f *tlsFixture, addr string, cert tls.Certificate) bool {
	t.Helper()
	c := f.client(t, "", "")
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	conn, err := dialTLS(t, addr, c)
	if err != nil {
		return false
	}
	// A refusal may come just after the 200 ms dialTLS waits: write, then
	// see whether the server closes.
	conn.Write([]byte(octet("<13>Dec  4 10:00:00 h app: probe")))
	conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err = conn.Read(make([]byte, 1))
	return os.IsTimeout(err)
}

// Finding: client_names compares with strings.EqualFold, which folds
// Unicode: a common name with the Kelvin sign K (U+212A) or the long s
// (U+017F) is "equal" to an ASCII name with k or s. A CA that checks the
// names it issues as bytes (or a client that may pick its CN) lets
// "\u212Aafka.test" in as kafka.test. Host names are ASCII: compare ASCII
// case-insensitively and refuse non-ASCII names.
func TestAttackTLSClientNamesUnicodeFold(t *testing.T) {
	f := newTLSFixture(t)
	ca := newForgeCA(t)
	ts := mtlsSource(t, f, ca, "kafka.test", "sender-1.test")
	for _, cn := range []string{"\u212Aafka.test", "\u017Fender-1.test"} {
		if admitted(t, f, ts.tlsAddr(), ca.issue(&x509.Certificate{Subject: pkix.Name{CommonName: cn}})) {
			t.Errorf("a client certificate with CN %q (%+q) was admitted by client_names [kafka.test sender-1.test]", cn, cn)
		}
	}
}

// Finding (hardening): the common name is matched even when the
// certificate has DNS subject alternative names. RFC 6125 §6.4.4 (and Go's
// own verification) ignore the CN once SANs are present; a PKI that
// validates SANs but leaves the CN to the requester admits a certificate
// for evil.test whose CN says web-1.test.
func TestAttackTLSClientNamesCNBesideSANs(t *testing.T) {
	f := newTLSFixture(t)
	ca := newForgeCA(t)
	ts := mtlsSource(t, f, ca, "web-1.test")
	cert := ca.issue(&x509.Certificate{Subject: pkix.Name{CommonName: "web-1.test"}, DNSNames: []string{"evil.test"}})
	if admitted(t, f, ts.tlsAddr(), cert) {
		t.Error("a certificate for DNS name evil.test was admitted because its CN is web-1.test")
	}
}

// Holds: what client_names must refuse, and the case folding the README
// promises.
func TestAttackTLSClientNamesHold(t *testing.T) {
	f := newTLSFixture(t)
	ca := newForgeCA(t)
	stranger := newForgeCA(t)
	ts := mtlsSource(t, f, ca, "sender-1.test")
	u, _ := url.Parse("spiffe://sender-1.test")
	for _, tc := range []struct {
		name string
		ca   *forgeCA
		tmpl *x509.Certificate
		want bool
	}{
		{"listed DNS name", ca, &x509.Certificate{DNSNames: []string{"sender-1.test"}}, true},
		{"listed CN, no SAN", ca, &x509.Certificate{Subject: pkix.Name{CommonName: "sender-1.test"}}, true},
		{"other case", ca, &x509.Certificate{DNSNames: []string{"SENDER-1.Test"}}, true},
		{"wildcard SAN", ca, &x509.Certificate{DNSNames: []string{"*.test"}}, false},
		{"wildcard CN", ca, &x509.Certificate{Subject: pkix.Name{CommonName: "*"}}, false},
		{"no names at all", ca, &x509.Certificate{}, false},
		{"empty CN, other SAN", ca, &x509.Certificate{DNSNames: []string{"other.test"}}, false},
		{"trailing dot", ca, &x509.Certificate{DNSNames: []string{"sender-1.test."}}, false},
		{"suffix", ca, &x509.Certificate{DNSNames: []string{"sender-1.test.evil"}}, false},
		{"NUL in CN", ca, &x509.Certificate{Subject: pkix.Name{CommonName: "sender-1.test\x00.evil"}}, false},
		{"name in URI SAN only", ca, &x509.Certificate{URIs: []*url.URL{u}}, false},
		{"name in OU only", ca, &x509.Certificate{Subject: pkix.Name{OrganizationalUnit: []string{"sender-1.test"}}}, false},
		{"name in email SAN only", ca, &x509.Certificate{EmailAddresses: []string{"sender-1.test"}}, false},
		{"listed name, other CA", stranger, &x509.Certificate{DNSNames: []string{"sender-1.test"}}, false},
		{"listed name, server-only EKU", ca, &x509.Certificate{DNSNames: []string{"sender-1.test"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, false},
		{"listed name, expired", ca, &x509.Certificate{DNSNames: []string{"sender-1.test"},
			NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := admitted(t, f, ts.tlsAddr(), tc.ca.issue(tc.tmpl)); got != tc.want {
				t.Errorf("admitted = %v, want %v", got, tc.want)
			}
		})
	}
}

// Holds: allow is applied on accept, before the handshake: a sender out
// of it gets no ServerHello, and its refusal is counted as not_allowed,
// not as a handshake error. On a RELP-over-TLS listener too.
func TestAttackTLSAllowBeforeHandshake(t *testing.T) {
	f := newTLSFixture(t)
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{},
		RELP:  []RELPListener{{Listen: "127.0.0.1:0", TLS: &TLSFiles{CertFile: f.serverCert, KeyFile: f.srvKey}}},
		Allow: map[string][]string{"127.0.0.1:0": {"127.0.0.2/32"}}}, &memSink{})
	addr := ts.ListenAddrs("relp")[0].String()
	raw := dialFrom(t, "127.0.0.3", addr)
	c := tls.Client(raw, f.client(t, "", ""))
	c.SetDeadline(time.Now().Add(waitFor))
	if err := c.Handshake(); err == nil {
		t.Fatal("a sender outside allow finished a TLS handshake")
	}
	waitUntil(t, func() bool {
		return ts.metric(t, "outpost_syslog_rejected_connections_total", map[string]string{"reason": rejectNotAllow}) == 1
	})
	for _, r := range tlsReasons {
		if n := ts.metric(t, "outpost_syslog_tls_handshake_errors_total", map[string]string{"reason": r}); n != 0 {
			t.Errorf("handshake_errors_total{reason=%q} = %v: the refused sender got to the handshake", r, n)
		}
	}
	raw = dialFrom(t, "127.0.0.2", addr)
	c = tls.Client(raw, f.client(t, "", ""))
	c.SetDeadline(time.Now().Add(waitFor))
	if err := c.Handshake(); err != nil {
		t.Fatalf("an allowed sender: %v", err)
	}
}

// Holds: connections that never finish their handshake (silent, or
// trickling a ClientHello a byte at a time) fill the table, yet a real
// client gets in once they have been idle for a second: the trickle
// does not count as activity.
func TestAttackTLSHalfOpenHandshakesDoNotLockOut(t *testing.T) {
	f := newTLSFixture(t)
	sink := &memSink{}
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{}, MaxConnections: 4, HandshakeTimeout: 20 * time.Second,
		TLS: []TLSListener{{Listen: "127.0.0.1:0", TLSFiles: TLSFiles{CertFile: f.serverCert, KeyFile: f.srvKey}}}}, sink)
	addr := ts.tlsAddr()
	stop := make(chan struct{})
	defer close(stop)
	for i := range 4 {
		c := dial(t, "tcp", addr)
		if i%2 == 1 {
			go func() { // a TLS record header, then one byte every 100 ms
				hello := []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}
				for _, b := range append(hello, make([]byte, 200)...) {
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
					if _, err := c.Write([]byte{b}); err != nil {
						return
					}
				}
			}()
		}
	}
	time.Sleep(evictAfter + 300*time.Millisecond)
	c, err := dialTLS(t, addr, f.client(t, "", ""))
	if err != nil {
		t.Fatalf("a real client was kept out by half-open handshakes: %v", err)
	}
	write(t, c, octet("<13>Dec  4 10:00:00 h app: in"))
	sink.wait(t, 1, 0)
}

// Finding: a reload takes any pair that parses, an expired (or not yet
// valid) certificate included: a renewal that put an old certificate in
// place replaces the good one, and every client then refuses the
// listener. The README promises the listener keeps its files when the new
// ones do not load; it only logs an error. A certificate outside its
// validity should be refused like a mismatched key.
func TestAttackTLSReloadTakesExpiredCertificate(t *testing.T) {
	f := newTLSFixture(t)
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{},
		TLS: []TLSListener{{Listen: "127.0.0.1:0", TLSFiles: TLSFiles{CertFile: f.serverCert, KeyFile: f.srvKey}}}}, &memSink{})
	f.ca.Issue("server", "outpost.test", true, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
	err := ts.ReloadTLS()
	// The watcher may have loaded it first; either way, look at what is served.
	c := f.client(t, "", "")
	c.InsecureSkipVerify = true
	conn, derr := dialTLS(t, ts.tlsAddr(), c)
	if derr != nil {
		t.Fatal(derr)
	}
	if leaf := conn.ConnectionState().PeerCertificates[0]; time.Now().After(leaf.NotAfter) {
		t.Errorf("after a reload of an expired certificate (ReloadTLS: %v), the listener serves it (not_after %s)",
			err, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
}

// Finding: the watcher reloads only after 200 ms without any event in the
// files' directories, and counts events on every file there. A directory
// where something else changes more often than that (a busy /etc/outpost,
// a cert kept beside a log or data_dir) postpones the reload for as long
// as it stays busy: a renewed certificate is not picked up. The wait needs
// a bound from the first event, and events on other files can be ignored.
func TestAttackTLSWatcherStarvedByBusyDirectory(t *testing.T) {
	f := newTLSFixture(t)
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{},
		TLS: []TLSListener{{Listen: "127.0.0.1:0", TLSFiles: TLSFiles{CertFile: f.serverCert, KeyFile: f.srvKey}}}}, &memSink{})
	serial := func() int64 {
		conn, err := dialTLS(t, ts.tlsAddr(), f.client(t, "", ""))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	first := serial()
	noise := filepath.Join(filepath.Dir(f.serverCert), "noise")
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			os.WriteFile(noise, []byte{byte(i)}, 0o600)
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	defer func() { close(stop); <-done }()
	time.Sleep(100 * time.Millisecond)
	f.ca.Valid("server", "outpost.test", true) // the renewal
	deadline := time.Now().Add(2 * time.Second)
	for serial() == first {
		if time.Now().After(deadline) {
			t.Fatal("a renewed certificate was not loaded within 2 s while another file in its directory changes every 50 ms")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Holds: a client admitted before a change of client_ca_file cannot
// resume its TLS session to get past the new CA: every handshake is
// checked against the files of the moment.
func TestAttackTLSResumptionAfterCARotation(t *testing.T) {
	f := newTLSFixture(t)
	caFile := filepath.Join(t.TempDir(), "clients.pem")
	data, _ := os.ReadFile(f.ca.File)
	os.WriteFile(caFile, data, 0o600)
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{},
		TLS: []TLSListener{{Listen: "127.0.0.1:0", TLSFiles: TLSFiles{CertFile: f.serverCert, KeyFile: f.srvKey, ClientCAFile: caFile}}}}, &memSink{})
	c := f.client(t, f.clientCert, f.clientKy)
	c.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		c.MinVersion, c.MaxVersion = v, v
		if _, err := dialTLS(t, ts.tlsAddr(), c); err != nil { // reads, so a 1.3 ticket arrives
			t.Fatal(err)
		}
	}
	other := tlstest.NewCA(t, t.TempDir(), "rotated")
	data, _ = os.ReadFile(other.File)
	if err := os.WriteFile(caFile+".tmp", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(caFile+".tmp", caFile); err != nil {
		t.Fatal(err)
	}
	if err := ts.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		c.MinVersion, c.MaxVersion = v, v
		conn, err := dialTLS(t, ts.tlsAddr(), c)
		if err == nil {
			t.Errorf("TLS %x: a client of the CA taken out of client_ca_file got in (resumed: %v)", v, conn.ConnectionState().DidResume)
		}
	}
}

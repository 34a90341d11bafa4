package pipeline

// The TestAttack* tests in this file come from an adversarial review. Those
// named after a finding failed when written and now hold its fix (the
// "Finding:" comments describe the behaviour before it); those ending in
// Holds are what the review tried and found already safe.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/ingest/syslog"
	"github.com/outpost-siem/outpost/aggregator/ingest/syslog/tlstest"
)

// Finding: check-config says "ok" for TLS material with which no client
// can connect. It checks that the pair loads, matches, and that the leaf
// has not expired; not that the certificate is valid yet, that it is a
// server certificate (Go and OpenSSL clients, rsyslog's ossl driver
// among them, refuse a certificate whose extended key usage excludes
// serverAuth), or that client_ca_file's CA has not expired (then every
// client is refused, as expired_certificate). The running listener logs
// nothing about these either.
func TestAttackCheckConfigPassesUnusableTLS(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "test")
	goodCert, goodKey := ca.Valid("good", "outpost.test", true)
	futureCert, futureKey := ca.Issue("future", "outpost.test", true, time.Now().Add(24*time.Hour), time.Now().Add(90*24*time.Hour))
	clientCert, clientKey := ca.Valid("client-only", "outpost.test", false) // EKU clientAuth only
	expiredCA := expiredCAFile(t, dir)

	for _, tc := range []struct {
		name string
		f    syslog.TLSFiles
		ok   bool
	}{
		{"a good pair", syslog.TLSFiles{CertFile: goodCert, KeyFile: goodKey, ClientCAFile: ca.File}, true},
		{"not valid yet", syslog.TLSFiles{CertFile: futureCert, KeyFile: futureKey}, false},
		{"a client certificate", syslog.TLSFiles{CertFile: clientCert, KeyFile: clientKey}, false},
		{"an expired client CA", syslog.TLSFiles{CertFile: goodCert, KeyFile: goodKey, ClientCAFile: expiredCA}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &Config{DataDir: filepath.Join(dir, "data")}
			cfg.HTTP.Listen = "off"
			cfg.Ingest.Syslog = syslog.Config{UDP: []string{}, TCP: []string{},
				TLS: []syslog.TLSListener{{Listen: "127.0.0.1:0", TLSFiles: tc.f}}}
			var got *Check
			for _, c := range CheckDeployment(context.Background(), cfg) {
				if c.What == "ingest.syslog.tls[0]" {
					got = &c
				}
			}
			if got == nil {
				t.Fatal("no check of ingest.syslog.tls[0]")
			}
			if (got.Status == CheckOK) != tc.ok {
				t.Errorf("check-config says %q", got.String())
			}
		})
	}
}

// expiredCAFile writes a CA certificate that expired an hour ago.
func expiredCAFile(t *testing.T, dir string) string {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(99), Subject: pkix.Name{CommonName: "expired-ca"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "expired-ca.pem")
	tlstest.WritePEM(t, file, "CERTIFICATE", der)
	return file
}

package bus

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// selfSigned writes a certificate for 127.0.0.1, good for server and
// client auth and its own CA, and its key; it returns their paths.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "outpost test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// With nats.tls the client port speaks only TLS (and, with a client CA,
// only to clients with a certificate from it); the reader's key is still
// required, and Outpost's in-process connection is unaffected.
func TestListenTLS(t *testing.T) {
	certFile, keyFile := selfSigned(t, t.TempDir())
	dir := t.TempDir()
	b := openBusWith(t, Config{Listen: "127.0.0.1:0", TLS: ListenTLS{CertFile: certFile, KeyFile: keyFile, ClientCAFile: certFile}}, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.JetStream().Publish(ctx, "alerts.high", []byte("{}")); err != nil {
		t.Fatalf("outpost's own publish with tls on the port: %v", err)
	}

	t.Run("plaintext is refused", func(t *testing.T) {
		conn, r := dialRaw(t, b)
		info, _ := r.ReadString('\n')
		if !strings.Contains(info, `"tls_required":true`) {
			t.Errorf("INFO does not require TLS: %q", info)
		}
		_, _ = io.WriteString(conn, "CONNECT {}\r\nPUB alerts.critical 5\r\nhello\r\nPING\r\n")
		rest, _ := io.ReadAll(r)
		if strings.Contains(string(rest), "PONG") {
			t.Errorf("a plaintext client got through: %q", rest)
		}
		if n := streamMsgs(t, b, StreamAlerts); n != 1 {
			t.Errorf("ALERTS holds %d messages, want Outpost's 1", n)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		nkey, err := nats.NkeyOptionFromSeed(ReaderKeyFile(dir))
		if err != nil {
			t.Fatal(err)
		}
		if nc, err := nats.Connect("tls://"+clientAddr(t, b), nkey, nats.RootCAs(certFile), nats.Timeout(3*time.Second)); err == nil {
			nc.Close()
			t.Error("connected without a client certificate")
		}
	})
	t.Run("certificate without the key", func(t *testing.T) {
		if nc, err := nats.Connect("tls://"+clientAddr(t, b), nats.RootCAs(certFile), nats.ClientCert(certFile, keyFile), nats.Timeout(3*time.Second)); err == nil {
			nc.Close()
			t.Error("connected with a certificate but no nkey")
		}
	})
	t.Run("certificate and key", func(t *testing.T) {
		nc, _ := readerConn(t, b, dir, nats.RootCAs(certFile), nats.ClientCert(certFile, keyFile))
		if _, err := nc.Request("$JS.API.STREAM.INFO.ALERTS", nil, 5*time.Second); err != nil {
			t.Errorf("reader over mutual TLS: %v", err)
		}
	})
}

package forwarder

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/influxdata/go-syslog/v3/rfc5424"
	"github.com/outpost-siem/outpost/aggregator/ingest/syslog/tlstest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestTCPFramings(t *testing.T) {
	for _, framing := range []string{FramingLF, FramingOctetCounting} {
		t.Run(framing, func(t *testing.T) {
			h := newHarness(t)
			r := listenStream(t, "127.0.0.1:0", nil)
			h.start(testConfig(t, Destination{Address: r.addr(), Framing: framing}))
			h.publish(testAlerts(300)...)
			waitFor(t, 20*time.Second, "300 alerts", func() bool { return r.count() >= 300 })
			msgs := r.messages()
			if d := checkAll(t, msgs, 300); d != 0 {
				t.Errorf("%d duplicates without a fault", d)
			}
			p := rfc5424.NewParser()
			for _, m := range msgs[:5] {
				sm, err := p.Parse([]byte(m))
				if err != nil {
					t.Fatalf("not RFC 5424: %v: %q", err, m)
				}
				msg := *sm.(*rfc5424.SyslogMessage).Message
				if !strings.HasPrefix(msg, "CEF:0|Outpost|Outpost|test|ssh.bruteforce|SSH brute force|7|") {
					t.Errorf("MSG is not the CEF line (BOM?): %q", msg)
				}
			}
		})
	}
}

func TestRFC3164Format(t *testing.T) {
	h := newHarness(t)
	r := listenStream(t, "127.0.0.1:0", nil)
	h.start(testConfig(t, Destination{Address: r.addr(), Format: FormatRFC3164, Facility: "local7"}))
	h.publish(testAlerts(3)...)
	waitFor(t, 20*time.Second, "3 alerts", func() bool { return r.count() >= 3 })
	// local7 (23) * 8 + CEF 7 → syslog error (3) = 187.
	re := regexp.MustCompile(`^<187>[A-Z][a-z]{2} [ 1-3][0-9] \d\d:\d\d:\d\d outpost-test CEF:0\|Outpost\|Outpost\|test\|ssh\.bruteforce\|`)
	for _, m := range r.messages() {
		if !re.MatchString(m) {
			t.Errorf("not the RFC 3164 CEF form: %q", m)
		}
	}
	checkAll(t, r.messages(), 3)
}

func TestUDP(t *testing.T) {
	h := newHarness(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	var mu sync.Mutex
	var got []string
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, string(buf[:n]))
			mu.Unlock()
		}
	}()
	big := testAlerts(21)
	big[20].Description = strings.Repeat("long description ", 300) // > 2048 bytes
	_, reg, _ := newHarnessStart(t, h, Destination{Address: pc.LocalAddr().String(), Transport: TransportUDP})
	// Pace the datagrams: the kernel drops what the socket buffer can't take.
	for i := range big {
		h.publish(big[i])
		time.Sleep(2 * time.Millisecond)
	}
	waitFor(t, 20*time.Second, "21 datagrams", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 21 })
	mu.Lock()
	defer mu.Unlock()
	checkAll(t, got, 21)
	for _, m := range got {
		if len(m) > 2048 {
			t.Errorf("datagram of %d bytes, over the 2048 guard", len(m))
		}
		if strings.ContainsAny(m, "\n") {
			t.Errorf("datagram carries a framing LF: %q", m)
		}
	}
	if n := testutil.ToFloat64(mustCollector(t, reg, "outpost_forwarder_oversize_messages_total")); n != 1 {
		t.Errorf("oversize messages = %v, want 1", n)
	}
}

func TestTLSMutual(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	serverConf := &tls.Config{
		Certificates: []tls.Certificate{pki.server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pki.pool,
		MinVersion:   tls.VersionTLS12,
	}
	t.Run("client cert", func(t *testing.T) {
		h := newHarness(t)
		r := listenStream(t, "127.0.0.1:0", serverConf)
		h.start(testConfig(t, Destination{Address: r.addr(), Transport: TransportTLS, Framing: FramingOctetCounting,
			TLS: TLSConfig{CAFile: pki.caFile, CertFile: pki.clientCert, KeyFile: pki.clientKey, ServerName: "siem.test"}}))
		h.publish(testAlerts(50)...)
		waitFor(t, 20*time.Second, "50 alerts over mutual TLS", func() bool { return r.count() >= 50 })
		checkAll(t, r.messages(), 50)
	})
	t.Run("no client cert is refused", func(t *testing.T) {
		h := newHarness(t)
		r := listenStream(t, "127.0.0.1:0", serverConf)
		_, reg, _ := newHarnessStart(t, h, Destination{Address: r.addr(), Transport: TransportTLS,
			TLS: TLSConfig{CAFile: pki.caFile, ServerName: "siem.test"}})
		h.publish(testAlerts(1)...)
		waitFor(t, 20*time.Second, "a failed write", func() bool {
			return errCount(t, reg, "tls")+errCount(t, reg, "write") >= 1
		})
		if r.count() != 0 {
			t.Errorf("receiver got %d messages from a client without a certificate", r.count())
		}
	})
	t.Run("wrong server name is refused", func(t *testing.T) {
		h := newHarness(t)
		r := listenStream(t, "127.0.0.1:0", serverConf)
		_, reg, _ := newHarnessStart(t, h, Destination{Address: r.addr(), Transport: TransportTLS,
			TLS: TLSConfig{CAFile: pki.caFile, CertFile: pki.clientCert, KeyFile: pki.clientKey, ServerName: "other.test"}})
		h.publish(testAlerts(1)...)
		waitFor(t, 20*time.Second, "a failed handshake", func() bool { return errCount(t, reg, "tls") >= 1 })
	})
}

type testPKI struct {
	pool                          *x509.CertPool
	server                        tls.Certificate
	caFile, clientCert, clientKey string
}

// newTestPKI makes a CA, a server certificate for siem.test and 127.0.0.1,
// and a client certificate, and writes the CA and client files into dir.
func newTestPKI(t *testing.T, dir string) testPKI {
	t.Helper()
	ca := tlstest.NewCA(t, dir, "outpost-test")
	srvCert, srvKey := ca.Valid("server", "siem.test", true)
	cliCert, cliKey := ca.Valid("client", "outpost", false)
	server, err := tls.LoadX509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return testPKI{pool: pool, server: server, caFile: ca.File, clientCert: cliCert, clientKey: cliKey}
}

package forwarder

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// stallProxy is a TCP proxy in front of a receiver that the test can
// freeze (it stops reading from the forwarder, as a SIGSTOPped socat does:
// the forwarder's writes then only fill socket buffers, its own and the
// proxy's) and cut (both sides of every connection reset, whatever the
// buffers hold).
type stallProxy struct {
	ln      net.Listener
	backend string
	mu      sync.Mutex
	conns   []*net.TCPConn
	frozen  chan struct{} // closed while not frozen
	wg      sync.WaitGroup
}

func newStallProxy(t *testing.T, backend string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, backend: backend, frozen: make(chan struct{})}
	close(p.frozen)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		relayAccepts(ln, backend, func(c, b net.Conn) {
			p.mu.Lock()
			p.conns = append(p.conns, c.(*net.TCPConn), b.(*net.TCPConn))
			p.mu.Unlock()
			p.wg.Add(2)
			go p.pipe(c, b)
			go func() { defer p.wg.Done(); _, _ = io.Copy(c, b) }() // TLS handshakes; never frozen
		})
	}()
	t.Cleanup(func() { ln.Close(); p.thaw(); p.cut(); p.wg.Wait() })
	return p
}

// pipe copies the forwarder's bytes to the receiver, reading only while
// the proxy is not frozen.
func (p *stallProxy) pipe(c, b net.Conn) {
	defer p.wg.Done()
	defer c.Close()
	defer b.Close()
	buf := make([]byte, 32<<10)
	for {
		p.mu.Lock()
		running := p.frozen
		p.mu.Unlock()
		<-running
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := b.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *stallProxy) addr() string { return p.ln.Addr().String() }

func (p *stallProxy) freeze() {
	p.mu.Lock()
	p.frozen = make(chan struct{})
	p.mu.Unlock()
}

func (p *stallProxy) thaw() {
	p.mu.Lock()
	select {
	case <-p.frozen:
	default:
		close(p.frozen)
	}
	p.mu.Unlock()
}

// cut resets every connection, in both directions: what the proxy's
// socket buffers held is gone.
func (p *stallProxy) cut() {
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.SetLinger(0)
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
}

// TestStallThenCut is the frozen-then-cut link: alerts stream through a
// proxy, the proxy stops reading for longer than write_timeout, then both
// sides are cut and the proxy works again. Nothing may be lost: what the
// forwarder wrote into the frozen link is sent again, with its externalId.
func TestStallThenCut(t *testing.T) {
	for _, transport := range []string{TransportTCP, TransportTLS} {
		t.Run(transport, func(t *testing.T) {
			h := newHarness(t)
			dest := Destination{Address: "", WriteTimeout: time.Second}
			var r *streamReceiver
			if transport == TransportTLS {
				pki := newTestPKI(t, t.TempDir())
				r = listenStream(t, "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pki.server}, MinVersion: tls.VersionTLS12})
				dest.Transport, dest.TLS = TransportTLS, TLSConfig{CAFile: pki.caFile, ServerName: "siem.test"}
			} else {
				r = listenStream(t, "127.0.0.1:0", nil)
			}
			px := newStallProxy(t, r.addr())
			dest.Address = px.addr()
			_, reg, _ := h.start(testConfig(t, dest))
			const n = 3000
			alerts := testAlerts(n)
			published := make(chan struct{})
			go func() {
				defer close(published)
				for i := 0; i < n; i += 100 {
					h.publish(alerts[i : i+100]...)
					time.Sleep(20 * time.Millisecond) // about 1.5 s of traffic
				}
			}()
			waitFor(t, 10*time.Second, "500 alerts before the freeze", func() bool { return r.count() >= 500 })
			px.freeze()
			atFreeze := r.count()
			time.Sleep(2 * time.Second) // twice write_timeout
			sentFrozen := testutil.ToFloat64(mustCollector(t, reg, "outpost_forwarder_sent_alerts_total"))
			px.cut()
			px.thaw()
			<-published
			deadline := time.Now().Add(10 * time.Second)
			for distinctIDs(r.messages()) < n && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			got := distinctIDs(r.messages())
			t.Logf("%d received at the freeze, sent_alerts_total %.0f before the cut; afterwards %d distinct of %d, %d messages, stalled errors %.0f",
				atFreeze, sentFrozen, got, n, r.count(), errCount(t, reg, "stalled"))
			if got < n {
				t.Fatalf("%d alerts lost", n-got)
			}
			dups, cut := checkAllCut(t, r.messages(), n)
			t.Logf("0 lost, %d duplicates, %d messages cut short by the cut", dups, cut)
		})
	}
}

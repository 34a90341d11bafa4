package forwarder

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// relpServer is a RELP receiver for tests: it answers open, syslog and
// close, and acknowledges a message once it is stored in memory. paused
// stops it reading (a receiver whose window is full).
type relpServer struct {
	ln     net.Listener
	mu     sync.Mutex
	msgs   []string
	conns  map[net.Conn]bool
	paused atomic.Bool
	wg     sync.WaitGroup
}

func listenRELP(t testing.TB, addr string) *relpServer {
	t.Helper()
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	s := &relpServer{ln: ln, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			s.wg.Add(1)
			go s.serve(c)
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *relpServer) serve(c net.Conn) {
	defer s.wg.Done()
	defer c.Close()
	p := &relpSender{r: bufio.NewReader(c)} // its frame reader, reused
	for {
		for i := 0; s.paused.Load() && i < 3000; i++ {
			time.Sleep(10 * time.Millisecond)
		}
		txnr, cmd, data, err := p.readFrame()
		if err != nil {
			return
		}
		var rsp string
		switch cmd {
		case "open":
			rsp = "200 OK\nrelp_version=0\nrelp_software=outpost-test\ncommands=syslog"
		case "syslog":
			s.mu.Lock()
			s.msgs = append(s.msgs, string(data))
			s.mu.Unlock()
			rsp = "200 OK"
		case "close":
			fmt.Fprintf(c, "%d rsp 0\n0 serverclose 0\n", txnr)
			return
		default:
			rsp = "500 unknown command"
		}
		if _, err := fmt.Fprintf(c, "%d rsp %d %s\n", txnr, len(rsp), rsp); err != nil {
			return
		}
	}
}

func (s *relpServer) addr() string { return s.ln.Addr().String() }

func (s *relpServer) messages() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msgs...)
}

func (s *relpServer) count() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.msgs) }

func (s *relpServer) close() {
	_ = s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.paused.Store(false)
	s.wg.Wait()
}

// proxy is a TCP proxy the test controls: cut drops every connection at
// once, in both directions, whatever is in flight.
type proxy struct {
	ln      net.Listener
	backend string
	mu      sync.Mutex
	conns   []net.Conn
	cuts    int
}

func newProxy(t *testing.T, backend string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, backend: backend}
	go relayAccepts(ln, backend, func(c, b net.Conn) {
		p.mu.Lock()
		p.conns = append(p.conns, c, b)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(b, c); b.Close() }()
		go func() { _, _ = io.Copy(c, b); c.Close() }()
	})
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

// relayAccepts accepts on ln until it is closed, dials backend for each
// client and hands the pair to pair; a client whose dial fails is closed.
func relayAccepts(ln net.Listener, backend string, pair func(client, server net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", backend)
		if err != nil {
			c.Close()
			continue
		}
		pair(c, b)
	}
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // RST, not FIN: buffered data is dropped
		}
		_ = c.Close()
	}
	p.conns = nil
	p.cuts++
}

// reservedAddr returns a loopback address nobody listens on (yet).
func reservedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestReceiverDownThenBack(t *testing.T) {
	for _, transport := range []string{TransportTCP, TransportRELP} {
		t.Run(transport, func(t *testing.T) {
			h := newHarness(t)
			addr := reservedAddr(t)
			_, reg, _ := newHarnessStart(t, h, Destination{Address: addr, Transport: transport})
			alerts := testAlerts(400)
			h.publish(alerts[:200]...)
			waitFor(t, 20*time.Second, "failed dials", func() bool { return errCount(t, reg, "dial") >= 3 })
			var count func() int
			var msgs func() []string
			if transport == TransportRELP {
				s := listenRELP(t, addr)
				count, msgs = s.count, s.messages
			} else {
				r := listenStream(t, addr, nil)
				count, msgs = r.count, r.messages
			}
			h.publish(alerts[200:]...)
			waitFor(t, 30*time.Second, "400 alerts after the receiver came back", func() bool { return distinctIDs(msgs()) >= 400 })
			time.Sleep(100 * time.Millisecond)
			dups := checkAll(t, msgs(), 400)
			t.Logf("%d messages, %d duplicates", count(), dups)
		})
	}
}

// TestProxyCutMidStream cuts the connection (RST, data in flight dropped)
// several times while alerts stream. Over RELP nothing is lost: what was
// not acknowledged is resent on the next session.
func TestProxyCutMidStream(t *testing.T) {
	h := newHarness(t)
	s := listenRELP(t, "127.0.0.1:0")
	px := newProxy(t, s.addr())
	h.start(testConfig(t, Destination{Address: px.addr(), Transport: TransportRELP}))
	const n = 3000
	alerts := testAlerts(n)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < n; i += 100 {
			h.publish(alerts[i : i+100]...)
		}
	}()
	for i := 0; i < 5; i++ {
		target := (i + 1) * n / 7
		waitFor(t, 30*time.Second, fmt.Sprintf("%d alerts before cut %d", target, i+1), func() bool { return s.count() >= target })
		px.cut()
	}
	<-done
	waitFor(t, 60*time.Second, "every alert after the cuts", func() bool { return distinctIDs(s.messages()) >= n })
	dups := checkAll(t, s.messages(), n)
	t.Logf("%d cuts, %d messages, %d duplicates", px.cuts, s.count(), dups)
}

// TestReceiverStopsReading: the receiver accepts but stops reading, so the
// windows fill (RELP: acks stop coming; TCP: the socket buffers fill and
// the write times out). When it reads again every alert arrives.
func TestReceiverStopsReading(t *testing.T) {
	t.Run("relp", func(t *testing.T) {
		h := newHarness(t)
		s := listenRELP(t, "127.0.0.1:0")
		_, reg, _ := newHarnessStart(t, h, Destination{Address: s.addr(), Transport: TransportRELP, WriteTimeout: 500 * time.Millisecond})
		alerts := testAlerts(600)
		h.publish(alerts[:100]...)
		waitFor(t, 20*time.Second, "first 100", func() bool { return s.count() >= 100 })
		s.paused.Store(true)
		h.publish(alerts[100:]...)
		waitFor(t, 20*time.Second, "a read timeout", func() bool { return errCount(t, reg, "read") >= 1 })
		s.paused.Store(false)
		waitFor(t, 30*time.Second, "all 600", func() bool { return distinctIDs(s.messages()) >= 600 })
		t.Logf("%d duplicates", checkAll(t, s.messages(), 600))
	})
	t.Run("tcp", func(t *testing.T) {
		h := newHarness(t)
		r := listenStream(t, "127.0.0.1:0", nil)
		pause := make(chan struct{})
		// Stop the receiver reading by putting a paused proxy in front: it
		// accepts and then does not read until pause is closed.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					<-pause
					b, err := net.Dial("tcp", r.addr())
					if err != nil {
						return
					}
					defer b.Close()
					_, _ = io.Copy(b, c)
				}()
			}
		}()
		_, reg, _ := newHarnessStart(t, h, Destination{Address: ln.Addr().String(), WriteTimeout: 500 * time.Millisecond})
		alerts := testAlerts(2500)
		for i := range alerts {
			alerts[i].Description = strings.Repeat("x", 3000) // fill the socket buffers sooner
		}
		for i := 0; i < len(alerts); i += 250 {
			h.publish(alerts[i : i+250]...)
		}
		waitFor(t, 60*time.Second, "a write timeout", func() bool { return errCount(t, reg, "write") >= 1 })
		close(pause)
		waitFor(t, 60*time.Second, "all alerts", func() bool { return distinctIDs(r.messages()) >= len(alerts) })
		dups, cut := checkAllCut(t, r.messages(), len(alerts))
		t.Logf("%d duplicates, %d messages cut short by a write timeout", dups, cut)
	})
}

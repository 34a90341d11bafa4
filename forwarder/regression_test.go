package forwarder

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The ids recorded after a batch in which some alerts were suppressed (a
// crash replay) are those of the alerts delivered.
func TestSentIDsAlignAfterSuppression(t *testing.T) {
	h := newHarness(t)
	r := listenStream(t, "127.0.0.1:0", nil)
	cfg := testConfig(t, Destination{Address: r.addr()})
	s := newSentIDs(h.db, "siem", time.Hour)
	if err := s.record([]string{"a00000"}); err != nil {
		t.Fatal(err)
	}
	_, _, stop := h.start(cfg)
	h.publish(testAlerts(4)...)
	waitFor(t, 20*time.Second, "3 alerts", func() bool { return r.count() >= 3 })
	time.Sleep(500 * time.Millisecond)
	stop()
	seen, _ := s.seen([]string{"a00001", "a00002", "a00003"})
	t.Logf("delivered=%d seen(a1,a2,a3)=%v", r.count(), seen)
	if !seen[2] {
		t.Errorf("a00003 was delivered but its id was not recorded")
	}
}

// UDP to a port nobody listens on: the ICMP refusals fail the batches, so
// nothing is counted delivered or acked.
func TestUDPDownReceiverIsNotDelivered(t *testing.T) {
	h := newHarness(t)
	addr := reservedAddr(t)
	cfg := testConfig(t, Destination{Address: addr, Transport: TransportUDP})
	_, reg, stop := h.start(cfg)
	h.publish(testAlerts(20)...)
	time.Sleep(2 * time.Second)
	stop()
	sent := testutil.ToFloat64(mustCollector(t, reg, "outpost_forwarder_sent_alerts_total"))
	t.Logf("sent_alerts_total=%v with no receiver; write errors=%v", sent, errCount(t, reg, "write"))
	if sent > 0 {
		t.Errorf("%v alerts counted delivered (and acked) with nobody listening", sent)
	}
}

func relpTestMsgs(n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = []byte(fmt.Sprintf("%06d", i) + strings.Repeat("x", size))
	}
	return out
}

// RELP: a window larger than the write buffer, after an idle spell longer
// than write_timeout, goes out (bufio's own flushes run under a fresh
// deadline).
func TestRELPBurstAfterIdle(t *testing.T) {
	srv := listenRELP(t, "127.0.0.1:0")
	d := &Destination{Address: srv.addr(), DialTimeout: time.Second, WriteTimeout: 300 * time.Millisecond, KeepAlive: 30 * time.Second, RELP: RELPConfig{Window: 128}}
	s := &relpSender{dest: d}
	defer s.close()
	n, err := s.send(context.Background(), relpTestMsgs(128, 1000))
	t.Logf("first: n=%d err=%v", n, err)
	time.Sleep(time.Second)
	n, err = s.send(context.Background(), relpTestMsgs(128, 1000))
	t.Logf("after idle: n=%d err=%v", n, err)
	if err != nil {
		t.Errorf("healthy receiver, batch failed after idle: %v", err)
	}
}

// RELP: a receiver that stops reading makes send fail within the write
// timeout, also on a fresh session.
func TestRELPStalledReceiverTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	release := make(chan struct{})
	defer close(release)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.(*net.TCPConn).SetReadBuffer(4096)
		p := &relpSender{r: bufio.NewReader(c)}
		txnr, _, _, _ := p.readFrame()
		rsp := "200 OK\nrelp_version=0\ncommands=syslog"
		fmt.Fprintf(c, "%d rsp %d %s\n", txnr, len(rsp), rsp)
		<-release // never read again while the test runs
		c.Close()
	}()
	d := &Destination{Address: ln.Addr().String(), DialTimeout: time.Second, WriteTimeout: 300 * time.Millisecond, KeepAlive: 30 * time.Second, RELP: RELPConfig{Window: 128}}
	s := &relpSender{dest: d}
	done := make(chan error, 1)
	go func() { _, err := s.send(context.Background(), relpTestMsgs(128, 60000)); done <- err }()
	select {
	case err := <-done:
		t.Logf("returned: %v", err)
	case <-time.After(5 * time.Second):
		t.Errorf("send still blocked after 5s with write_timeout 300ms")
	}
}

// A large delivered batch (a backlog after an outage) is recorded whole:
// one Badger transaction could not hold it ("Txn is too big"), which
// stopped the forwarder (found by aggregator/pipeline TestRELPSurvivesKill9:
// 30,000 alerts at once after a restart).
func TestSentIDsRecordALargeBatch(t *testing.T) {
	h := newHarness(t)
	s := newSentIDs(h.db, "siem", time.Hour)
	ids := make([]string, 200000)
	for i := range ids {
		ids[i] = fmt.Sprintf("%032x", i)
	}
	if err := s.record(ids); err != nil {
		t.Fatal(err)
	}
	seen, err := s.seen([]string{ids[0], ids[len(ids)/2], ids[len(ids)-1], "never-sent"})
	if err != nil {
		t.Fatal(err)
	}
	if !seen[0] || !seen[1] || !seen[2] || seen[3] {
		t.Fatalf("seen %v", seen)
	}
}

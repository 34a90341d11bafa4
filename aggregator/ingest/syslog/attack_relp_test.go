package syslog

// The TestAttack* tests in this file come from an adversarial review. Those
// named after a finding failed when written and now hold its fix (the
// "Finding:" comments describe the behaviour before it); those ending in
// Holds are what the review tried and found already safe.

// Attack tests of the RELP receiver: what someone who can reach the RELP
// port can do to the appliance. A TestAttack that fails is a finding (see
// the comment on each); one that passes is a regression test of an attack
// the code holds against.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// relpFrame renders one RELP command.
func relpFrame(txnr int, cmd, data string) string {
	if data == "" {
		return fmt.Sprintf("%d %s 0\n", txnr, cmd)
	}
	return fmt.Sprintf("%d %s %d %s\n", txnr, cmd, len(data), data)
}

const relpOne = "<13>Dec  4 10:00:00 h app: one"

// openRELP dials addr and opens a RELP session.
func openRELP(t *testing.T, addr string) *relpClient {
	t.Helper()
	c := dialRELP(t, addr)
	c.send(1, "open", relpOffers)
	c.expect("1 rsp 200 OK\nrelp_version=0\nrelp_software=outpost\ncommands=syslog")
	return c
}

// floodUnread sends unknown commands, each answered "500 command not
// supported" (about 6 times the bytes of the command), and never reads
// the answers, until a write has been blocked for 500ms: the server has
// stopped reading because its own write of the answers is blocked on a
// peer that does not read. Bounded by 64 MiB sent and 15 s.
func floodUnread(t *testing.T, c net.Conn) {
	t.Helper()
	var chunk bytes.Buffer
	for i := 0; chunk.Len() < 64<<10; i++ {
		fmt.Fprintf(&chunk, "%d x 0\n", 2+i%8)
	}
	start, sent := time.Now(), 0
	for sent < 64<<20 && time.Since(start) < 15*time.Second {
		c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Write(chunk.Bytes())
		sent += n
		if errors.Is(err, os.ErrDeadlineExceeded) {
			c.SetWriteDeadline(time.Time{})
			return
		}
		if err != nil {
			t.Fatalf("flooding: %v after %d bytes", err, sent)
		}
	}
	t.Fatalf("the server kept reading %d bytes of unread-answer commands for %s", sent, time.Since(start))
}

// relpSessions counts the goroutines serving a RELP session.
func relpSessions() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), ").serveRELP(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// Finding: a RELP peer that does not read its answers blocks the
// session's write for idle_timeout; shutdown only sets a read deadline,
// so Run does not return for up to idle_timeout (10 minutes by default)
// although it promises to be done within the 5 s drain bound.
func TestAttackRELPSlowReaderHoldsShutdown(t *testing.T) {
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{}, IdleTimeout: 30 * time.Second,
		RELP: []RELPListener{{Listen: "127.0.0.1:0"}}}, &memSink{})
	c := openRELP(t, ts.ListenAddrs("relp")[0].String())
	floodUnread(t, c.conn)

	ts.cancel()
	bound := drainTimeout + 3*time.Second
	select {
	case err := <-ts.done:
		ts.done <- err
	case <-time.After(bound):
		t.Errorf("Run did not return within %s of cancel: a RELP peer that does not read holds shutdown for idle_timeout", bound)
		c.conn.Close() // unread data: a reset, which fails the server's write
		select {
		case err := <-ts.done:
			ts.done <- err
		case <-time.After(waitFor):
			t.Fatal("Run did not return even after the peer went away")
		}
	}
}

// Finding: eviction wakes a connection's read, not its write. A RELP
// session blocked writing answers to a peer that does not read delivers
// no frame, so after 1 s it is evicted: its slot (and its source's count)
// goes to a new connection (and its source's count drops) while its goroutine, socket and buffers stay
// until idle_timeout. max_connections and max_connections_per_source stop
// bounding what the listener holds.
func TestAttackRELPEvictedWriterOutlivesItsSlot(t *testing.T) {
	const attackers = 3
	before := relpSessions()
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{}, IdleTimeout: 30 * time.Second,
		MaxConnections: 1,
		RELP:           []RELPListener{{Listen: "127.0.0.1:0"}}}, &memSink{})
	addr := ts.ListenAddrs("relp")[0].String()
	for i := range attackers {
		if i > 0 {
			time.Sleep(evictAfter + 200*time.Millisecond) // the blocked one is now "idle"
		}
		floodUnread(t, openRELP(t, addr).conn)
	}
	time.Sleep(500 * time.Millisecond) // time for evicted sessions to end, if they can
	open := ts.metric(t, "outpost_syslog_open_connections", nil)
	evicted := ts.metric(t, "outpost_syslog_evicted_connections_total", nil)
	if got := relpSessions() - before; got > 1 {
		t.Errorf("%d RELP sessions are being served with max_connections 1 (the table says %v open, %v evicted so far)",
			got, open, evicted)
	}
}

// Finding: the frame reader allocates DATALEN bytes (up to
// max_message_size) as soon as it has read the header, before any data
// arrives: "1 syslog 16777216 " (18 bytes) pins 16 MiB for frame_timeout.
// With max_message_size at its 16 MiB maximum, max_connections of them
// (1024) ask for 16 GiB; at 1 MiB, 1 GiB. The README says a connection
// keeps about 64 KiB plus, briefly, one frame.
func TestAttackRELPHeaderPinsMaxMessageSize(t *testing.T) {
	const conns = 8
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{}, MaxMessageSize: MaxMaxMessageSize,
		RELP: []RELPListener{{Listen: "127.0.0.1:0"}}}, &memSink{})
	addr := ts.ListenAddrs("relp")[0].String()
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	base := heap()
	for range conns {
		c := openRELP(t, addr)
		write(t, c.conn, fmt.Sprintf("2 syslog %d x", MaxMaxMessageSize)) // one data byte, then silence
	}
	const limit = 32 << 20 // generous: 8 sessions' buffers are under 1 MiB
	var grew uint64
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if h := heap(); h > base {
			grew = max(grew, h-base)
		}
		if grew > limit {
			break
		}
	}
	if grew > limit {
		t.Errorf("%d RELP headers of %d bytes each (and 1 byte of data) grew the heap by %d MiB", conns,
			len(fmt.Sprintf("2 syslog %d ", MaxMaxMessageSize)), grew>>20)
	}
}

// Holds: a length just over the 16 MiB hard cap is refused at once,
// without reading or allocating it; at the cap minus one byte with a
// small max_message_size, the data is read and dropped, the message
// dead-lettered (cut to max_message_size) and acknowledged, and the
// session goes on.
func TestAttackRELPHugeLengths(t *testing.T) {
	sink := &memSink{}
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{}, MaxMessageSize: 480,
		RELP: []RELPListener{{Listen: "127.0.0.1:0"}}}, sink)
	addr := ts.ListenAddrs("relp")[0].String()

	c := openRELP(t, addr)
	write(t, c.conn, fmt.Sprintf("2 syslog %d ", MaxMaxMessageSize+1024+1))
	if got, err := c.reply(); err == nil {
		t.Fatalf("a length over the hard cap was answered %q", got)
	}

	c = openRELP(t, addr)
	size := MaxMaxMessageSize + 1024 // the largest the reader takes
	c.conn.SetWriteDeadline(time.Now().Add(waitFor))
	w := bufio.NewWriterSize(c.conn, 1<<20)
	fmt.Fprintf(w, "2 syslog %d ", size)
	chunk := bytes.Repeat([]byte("z"), 1<<20)
	for left := size; left > 0; left -= min(left, len(chunk)) {
		w.Write(chunk[:min(left, len(chunk))])
	}
	w.WriteString("\n")
	w.WriteString(relpFrame(3, "syslog", "<13>Dec  4 10:00:00 h app: after"))
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	c.expect("2 rsp 200 OK")
	c.expect("3 rsp 200 OK")
	evs, dls := sink.wait(t, 1, 1)
	if len(dls) != 1 || len(dls[0].raw) > 480 || !strings.HasPrefix(dls[0].reason, KindOversize) {
		t.Errorf("dead letters: %d, first %d bytes, reason %q", len(dls), len(dls[0].raw), dls[0].reason)
	}
	if got := messages(evs); len(got) != 1 || got[0] != "after" {
		t.Errorf("events %q", got)
	}
}

// Holds: nothing is acknowledged that the sink did not confirm. The
// sink's Flush fails after the sink took the message: no "200 OK" for it,
// whatever else the batch holds (an open, an unknown command, a close).
func TestAttackRELPNoAckWhenFlushFails(t *testing.T) {
	for _, tail := range []string{"", "3 bogus 0\n", "3 close 0\n", "3 syslog 3 abc\n4 syslog 4 abcd\n"} {
		t.Run(fmt.Sprintf("%q", tail), func(t *testing.T) {
			sink := &memSink{flushErr: errors.New("jetstream unreachable")}
			ts := startSource(t, Config{UDP: []string{}, TCP: []string{}, RELP: []RELPListener{{Listen: "127.0.0.1:0"}}}, sink)
			c := openRELP(t, ts.ListenAddrs("relp")[0].String())
			write(t, c.conn, relpFrame(2, "syslog", relpOne)+tail)
			for {
				got, err := c.reply()
				if err != nil {
					return
				}
				if strings.Contains(got, "200 OK") {
					t.Fatalf("answered %q though the flush failed", got)
				}
			}
		})
	}
}

// Holds: half a frame then the peer's close, a protocol error after
// messages, and an eviction mid-frame: what was taken before is flushed
// and answered, nothing after.
func TestAttackRELPBrokenTail(t *testing.T) {
	sink := &memSink{}
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{}, RELP: []RELPListener{{Listen: "127.0.0.1:0"}}}, sink)
	addr := ts.ListenAddrs("relp")[0].String()
	for _, tail := range []string{"3 syslog 10 abc", "3 sys-log 1 a\n", "3 syslog 5 abcdefgh\n"} {
		c := openRELP(t, addr)
		write(t, c.conn, relpFrame(2, "syslog", relpOne)+tail)
		if tail == "3 syslog 10 abc" {
			c.conn.(*net.TCPConn).CloseWrite()
		}
		c.expect("2 rsp 200 OK")
		if got, err := c.reply(); err == nil {
			t.Errorf("tail %q: answered %q", tail, got)
		}
	}
}

// Holds: a sender that ignores its window and pipelines five times the
// batch in one write gets every message answered, in order, and no
// answer before a flush: the acks come in batches of at most 1024, one
// flush each.
func TestAttackRELPPipelinedPastTheBatch(t *testing.T) {
	const n = 5 * relpBatch
	sink := &memSink{}
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{}, RELP: []RELPListener{{Listen: "127.0.0.1:0"}}}, sink)
	c := openRELP(t, ts.ListenAddrs("relp")[0].String())
	var b strings.Builder
	for i := range n {
		b.WriteString(relpFrame(2+i, "syslog", fmt.Sprintf("<13>Dec  4 10:00:00 h app: %d", i)))
	}
	go func() { // written while the answers are read
		c.conn.SetWriteDeadline(time.Now().Add(waitFor))
		c.conn.Write([]byte(b.String()))
	}()
	for i := range n {
		c.expect(fmt.Sprintf("%d rsp 200 OK", 2+i))
	}
	sink.mu.Lock()
	flushes, events := sink.flushes, len(sink.events)
	sink.mu.Unlock()
	if events != n || flushes < n/relpBatch {
		t.Errorf("%d messages answered after %d flushes, %d events", n, flushes, events)
	}
}

// Finding (low): an oversize RELP message is dead-lettered with its first
// max_message_size bytes, where the README (and the TCP framer) keep a
// 4 KiB sample: a sender can put max_message_size of arbitrary bytes per
// frame into DEADLETTER, and each oversize frame holds that much memory
// while it is read.
func TestAttackRELPOversizeDeadLetterIsASample(t *testing.T) {
	sink := &memSink{}
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{}, MaxMessageSize: 64 << 10,
		RELP: []RELPListener{{Listen: "127.0.0.1:0"}}}, sink)
	c := openRELP(t, ts.ListenAddrs("relp")[0].String())
	write(t, c.conn, relpFrame(2, "syslog", strings.Repeat("y", 100<<10)))
	c.expect("2 rsp 200 OK")
	_, dls := sink.wait(t, 0, 1)
	if got := len(dls[0].raw); got > sampleSize {
		t.Errorf("the dead letter of an oversize RELP message holds %d bytes; the README promises its first %d", got, sampleSize)
	}
}

package syslog

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestReadRELPFrame(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "txnr command data" or "err: …"
	}{
		{"1 open 5 a=b\nc\n", "1 open a=b\nc"},
		{"12 syslog 3 abc\n", "12 syslog abc"},
		{"3 close 0\n", "3 close "},
		{"3 close 0 \n", "3 close "}, // an empty data field, as some senders write it
		{"999999999 rsp 6 200 OK\n", "999999999 rsp 200 OK"},
		{"1234567890 syslog 1 a\n", "err: more than 9 digits"},
		{"x syslog 1 a\n", "err: a number was expected"},
		{"1 sys-log 1 a\n", "err: bad command"},
		{"1  1 a\n", "err: empty command"},
		{"1 syslog 3 abcd\n", "err: does not end in LF"},
		{"1 syslog 3 ab", "err: unexpected EOF"},
		{"1 syslog", "err: unexpected EOF"},
		{"", "err: EOF"},
		{"1 syslog 99999999 a\n", "err: over the limit"},
		{"1 syslog 10 0123456789\n", "1 syslog 01234567 oversize 10"},
	} {
		f, err := ReadRELPFrame(bufio.NewReader(strings.NewReader(tc.in)), 8, 1000)
		got := fmt.Sprintf("%d %s %s", f.Txnr, f.Command, f.Data)
		if f.Oversize > 0 {
			got += fmt.Sprintf(" oversize %d", f.Oversize)
		}
		if err != nil {
			got = "err: " + err.Error()
		}
		wantErr := strings.HasPrefix(tc.want, "err: ")
		if !strings.Contains(got, strings.TrimPrefix(tc.want, "err: ")) || (err != nil) != wantErr {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzReadRELPFrame(f *testing.F) {
	for _, s := range []string{"1 open 5 a=b\nc\n", "2 syslog 3 abc\n3 close 0\n", "1 syslog 10 0123456789\n", "0 serverclose 0\n", "9 x 1 \n\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReader(bytes.NewReader(in))
		for range 100 {
			fr, err := ReadRELPFrame(br, 16, 64)
			if err != nil {
				return
			}
			if len(fr.Data) > 16 || fr.Txnr < 0 || fr.Txnr > 999999999 || fr.Command == "" || fr.Oversize > 64 {
				t.Fatalf("frame out of bounds: %+v", fr)
			}
		}
	})
}

// relpClient is a hand-driven RELP session.
type relpClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialRELP(t *testing.T, addr string) *relpClient {
	c := dial(t, "tcp", addr)
	return &relpClient{t: t, conn: c, r: bufio.NewReader(c)}
}

func (c *relpClient) send(txnr int, cmd, data string) {
	c.t.Helper()
	if data == "" {
		write(c.t, c.conn, fmt.Sprintf("%d %s 0\n", txnr, cmd))
		return
	}
	write(c.t, c.conn, fmt.Sprintf("%d %s %d %s\n", txnr, cmd, len(data), data))
}

// reply reads one response frame: "txnr command data".
func (c *relpClient) reply() (string, error) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(waitFor))
	f, err := ReadRELPFrame(c.r, 1<<16, 1<<16)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d %s %s", f.Txnr, f.Command, f.Data), nil
}

func (c *relpClient) expect(want string) {
	c.t.Helper()
	got, err := c.reply()
	if err != nil || got != want {
		c.t.Fatalf("reply %q (%v), want %q", got, err, want)
	}
}

const relpOffers = "relp_version=0\nrelp_software=test\ncommands=syslog"

func TestRELPSession(t *testing.T) {
	sink := &memSink{}
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{}, MaxMessageSize: 480, RELP: []RELPListener{{Listen: "127.0.0.1:0"}}}, sink)
	c := dialRELP(t, ts.ListenAddrs("relp")[0].String())
	c.send(1, "open", relpOffers)
	c.expect("1 rsp 200 OK\nrelp_version=0\nrelp_software=outpost\ncommands=syslog")
	c.send(2, "syslog", "<13>Dec  4 10:00:00 h app: one")
	c.send(3, "syslog", "<13>Dec  4 10:00:00 h app: two")
	c.expect("2 rsp 200 OK")
	c.expect("3 rsp 200 OK")
	// Oversize: taken as a dead letter, so acknowledged.
	c.send(4, "syslog", strings.Repeat("y", 500))
	c.expect("4 rsp 200 OK")
	c.send(5, "bogus", "x")
	c.expect("5 rsp 500 command not supported")
	c.send(6, "close", "")
	c.expect("6 rsp ")
	if _, err := c.reply(); err == nil {
		t.Fatal("the session stayed open after close")
	}
	evs, dls := sink.wait(t, 2, 1)
	if got := messages(evs); got[0] != "one" || got[1] != "two" || !strings.HasPrefix(dls[0].reason, KindOversize) {
		t.Fatalf("events %q, dead letter %q", got, dls[0].reason)
	}
}

// TestRELPProtocolErrors: a session that breaks the protocol is closed and
// counted; nothing of it is acknowledged past the break.
func TestRELPProtocolErrors(t *testing.T) {
	sink := &memSink{}
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{}, RELP: []RELPListener{{Listen: "127.0.0.1:0"}}}, sink)
	addr := ts.ListenAddrs("relp")[0].String()
	for i, tc := range []struct{ name, input string }{
		{"syslog before open", "1 syslog 3 abc\n"},
		{"plain syslog", "<13>Dec  4 10:00:00 h app: plain\n"},
		{"bad length", "1 open 999999999999 x\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRELP(t, addr)
			write(t, c.conn, tc.input)
			if got, err := c.reply(); err == nil {
				t.Fatalf("answered %q", got)
			}
			waitUntil(t, func() bool {
				return ts.metric(t, "outpost_component_errors_total", map[string]string{"error_type": KindRELPProtocol}) == float64(i+1)
			})
		})
	}
	t.Run("open without syslog", func(t *testing.T) {
		c := dialRELP(t, addr)
		c.send(1, "open", "relp_version=0\ncommands=other")
		c.expect("1 rsp 500 commands=syslog is required")
	})
	if evs, _ := sink.wait(t, 0, 0); len(evs) != 0 {
		t.Fatalf("events from broken sessions: %d", len(evs))
	}
}

// TestRELPNoAckWithoutFlush: when the sink cannot confirm (JetStream
// unreachable), the messages are not acknowledged and the session ends with
// serverclose; the sender keeps them.
func TestRELPNoAckWithoutFlush(t *testing.T) {
	sink := &memSink{flushErr: errors.New("jetstream unreachable")}
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{}, RELP: []RELPListener{{Listen: "127.0.0.1:0"}}}, sink)
	c := dialRELP(t, ts.ListenAddrs("relp")[0].String())
	c.send(1, "open", relpOffers)
	c.expect("1 rsp 200 OK\nrelp_version=0\nrelp_software=outpost\ncommands=syslog")
	c.send(2, "syslog", "<13>Dec  4 10:00:00 h app: one")
	c.expect("0 serverclose ")
	if _, err := c.reply(); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("after serverclose: %v", err)
	}
}

// TestRELPShutdown: at shutdown, what was read is answered once it is
// safe, then serverclose; the listener is closed.
func TestRELPShutdown(t *testing.T) {
	sink := &memSink{}
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{}, RELP: []RELPListener{{Listen: "127.0.0.1:0"}}}, sink)
	c := dialRELP(t, ts.ListenAddrs("relp")[0].String())
	c.send(1, "open", relpOffers)
	c.expect("1 rsp 200 OK\nrelp_version=0\nrelp_software=outpost\ncommands=syslog")
	c.send(2, "syslog", "<13>Dec  4 10:00:00 h app: one")
	c.expect("2 rsp 200 OK")
	if err := ts.stop(t); err != nil {
		t.Fatal(err)
	}
	c.expect("0 serverclose ")
}

// TestRELPFrameTimeout: a frame begun and never finished closes the
// session after frame_timeout (slowloris), counted.
func TestRELPFrameTimeout(t *testing.T) {
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{}, FrameTimeout: 200 * time.Millisecond,
		RELP: []RELPListener{{Listen: "127.0.0.1:0"}}}, &memSink{})
	c := dialRELP(t, ts.ListenAddrs("relp")[0].String())
	c.send(1, "open", relpOffers)
	c.expect("1 rsp 200 OK\nrelp_version=0\nrelp_software=outpost\ncommands=syslog")
	write(t, c.conn, "2 syslog 100 <13>Dec")
	expectClosed(t, c.conn)
	waitUntil(t, func() bool {
		return ts.metric(t, "outpost_component_errors_total", map[string]string{"error_type": errFrameTimeout}) == 1
	})
}

// TestRELPServerCloseWhenTheBusRefuses: when the sink refuses a message
// (the bus is gone), the session ends with serverclose and nothing more is
// answered.
func TestRELPServerCloseWhenTheBusRefuses(t *testing.T) {
	sink := &memSink{publishErr: errors.New("jetstream gone")}
	ts := startSource(t, Config{UDP: []string{}, TCP: []string{}, RELP: []RELPListener{{Listen: "127.0.0.1:0"}}}, sink)
	ts.runFails = true
	c := dialRELP(t, ts.ListenAddrs("relp")[0].String())
	c.send(1, "open", relpOffers)
	c.expect("1 rsp 200 OK\nrelp_version=0\nrelp_software=outpost\ncommands=syslog")
	c.send(2, "syslog", "<13>Dec  4 10:00:00 h app: one")
	c.expect("0 serverclose ")
}

package forwarder

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// relpSender is a RELP client (rsyslog's Reliable Event Logging Protocol,
// https://www.rsyslog.com/doc/relp.html), written for Outpost: the Go RELP
// clients that exist are little used and unmaintained (teragrep's rlp_05
// exposes unexported frame fields and has no window or resend logic), and
// the subset a sender needs is small.
//
// A session: "1 open LEN relp_version=0\nrelp_software=...\ncommands=syslog",
// answered by "1 rsp LEN 200 OK\n..."; then one "TXNR syslog LEN MSG" per
// message with TXNR counting up from 2 (wrapping 999999999 → 1); each is
// answered by "TXNR rsp 6 200 OK" once the receiver has taken the message.
// Up to relp.window commands may be unanswered at once. The server may send
// "0 serverclose 0" at any time; we end with "close" on shutdown.
//
// Delivery: send returns how many leading messages the receiver
// acknowledged with 200. Only those count as delivered; everything after is
// resent on a new session after a reconnect, so a receiver killed mid-way
// loses nothing it did not acknowledge. A message it had taken but not yet
// acknowledged arrives twice, with the same externalId.
type relpSender struct {
	dest *Destination
	conn *net.TCPConn
	r    *bufio.Reader
	w    *bufio.Writer
	txnr int // last transaction number used
}

const relpMaxResponse = 64 << 10

// errRELPRefused is a RELP response other than 200: the receiver refused
// the message (e.g. "500 queue full"), so it is retried like a failure.
var errRELPRefused = errors.New("relp: receiver refused the message")

func (s *relpSender) connected() bool { return s.conn != nil }

func (s *relpSender) send(ctx context.Context, msgs [][]byte) (int, error) {
	if s.conn == nil {
		if err := s.open(ctx); err != nil {
			return 0, err
		}
	}
	// Shutdown must not wait on a receiver that stopped reading: ending ctx
	// expires the connection's deadlines.
	conn := s.conn
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	acked := make([]bool, len(msgs))
	inflight := make(map[int]int, s.dest.RELP.Window) // txnr → index in msgs
	next, prefix := 0, 0
	fail := func(kind string, err error) (int, error) {
		s.close()
		return prefix, &kindError{kind, err}
	}
	for prefix < len(msgs) {
		if ctx.Err() != nil {
			return fail("write", ctx.Err())
		}
		// The deadline is set before the frames are written: bufio flushes
		// on its own once a window outgrows its buffer, and that write must
		// not run under a stale deadline (or none, on a fresh session).
		_ = s.conn.SetWriteDeadline(time.Now().Add(s.dest.WriteTimeout))
		sent := false
		for next < len(msgs) && len(inflight) < s.dest.RELP.Window {
			inflight[s.nextTxnr()] = next
			s.writeFrame(s.txnr, "syslog", msgs[next])
			next++
			sent = true
		}
		if sent {
			if err := s.w.Flush(); err != nil {
				return fail("write", err)
			}
		}
		// The write timeout also bounds the wait for each response: a
		// receiver that stops answering is treated like one that is down.
		_ = s.conn.SetReadDeadline(time.Now().Add(s.dest.WriteTimeout))
		txnr, cmd, data, err := s.readFrame()
		if err != nil {
			return fail("read", err)
		}
		switch cmd {
		case "serverclose":
			return fail("read", errors.New("relp: server closed the session"))
		case "rsp":
		default:
			return fail("protocol", fmt.Errorf("relp: unexpected command %q from server", cmd))
		}
		i, ok := inflight[txnr]
		if !ok {
			return fail("protocol", fmt.Errorf("relp: response to unknown txnr %d", txnr))
		}
		delete(inflight, txnr)
		if !bytes.HasPrefix(data, []byte("200")) {
			return fail("refused", fmt.Errorf("%w: %q", errRELPRefused, firstLine(data)))
		}
		acked[i] = true
		for prefix < len(msgs) && acked[prefix] {
			prefix++
		}
	}
	return prefix, nil
}

func (s *relpSender) nextTxnr() int {
	s.txnr++
	if s.txnr > 999_999_999 {
		s.txnr = 1
	}
	return s.txnr
}

// open dials and runs the open handshake.
func (s *relpSender) open(ctx context.Context) error {
	c, err := dialTCP(ctx, s.dest)
	if err != nil {
		return err
	}
	s.conn, s.r, s.w, s.txnr = c, bufio.NewReader(c), bufio.NewWriterSize(c, 64<<10), 0
	offers := []byte("relp_version=0\nrelp_software=outpost\ncommands=syslog")
	s.writeFrame(s.nextTxnr(), "open", offers)
	_ = c.SetDeadline(time.Now().Add(s.dest.DialTimeout))
	defer c.SetDeadline(time.Time{})
	err = s.w.Flush()
	var txnr int
	var cmd string
	var data []byte
	if err == nil {
		txnr, cmd, data, err = s.readFrame()
	}
	switch {
	case err != nil:
	case cmd != "rsp" || txnr != 1:
		err = fmt.Errorf("relp: open answered with %d %s", txnr, cmd)
	case !bytes.HasPrefix(data, []byte("200")):
		err = fmt.Errorf("relp: open refused: %q", firstLine(data))
	case !bytes.Contains(data, []byte("syslog")):
		err = errors.New("relp: server does not offer the syslog command")
	}
	if err != nil {
		s.close()
		return &kindError{"dial", fmt.Errorf("opening RELP session with %s: %w", s.dest.Address, err)}
	}
	return nil
}

func (s *relpSender) writeFrame(txnr int, cmd string, data []byte) {
	var hdr [32]byte
	b := strconv.AppendInt(hdr[:0], int64(txnr), 10)
	b = append(b, ' ')
	b = append(b, cmd...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(len(data)), 10)
	_, _ = s.w.Write(b)
	if len(data) > 0 {
		_ = s.w.WriteByte(' ')
		_, _ = s.w.Write(data)
	}
	_ = s.w.WriteByte('\n')
}

// readFrame reads TXNR SP COMMAND SP DATALEN [SP DATA] LF.
func (s *relpSender) readFrame() (txnr int, cmd string, data []byte, err error) {
	tok, _, err := s.token(' ')
	if err != nil {
		return 0, "", nil, err
	}
	if txnr, err = strconv.Atoi(tok); err != nil {
		return 0, "", nil, fmt.Errorf("relp: bad txnr %q", tok)
	}
	if cmd, _, err = s.token(' '); err != nil {
		return 0, "", nil, err
	}
	tok, end, err := s.token(' ', '\n')
	if err != nil {
		return 0, "", nil, err
	}
	n, err := strconv.Atoi(tok)
	if err != nil || n < 0 || n > relpMaxResponse {
		return 0, "", nil, fmt.Errorf("relp: bad data length %q", tok)
	}
	if end == '\n' {
		if n != 0 {
			return 0, "", nil, errors.New("relp: frame ends before its data")
		}
		return txnr, cmd, nil, nil
	}
	data = make([]byte, n+1)
	if _, err := io.ReadFull(s.r, data); err != nil {
		return 0, "", nil, err
	}
	if data[n] != '\n' {
		return 0, "", nil, errors.New("relp: frame without trailer")
	}
	return txnr, cmd, data[:n], nil
}

// token reads up to one of the stop bytes (at most 32 bytes).
func (s *relpSender) token(stops ...byte) (string, byte, error) {
	var b []byte
	for range 32 {
		c, err := s.r.ReadByte()
		if err != nil {
			return "", 0, err
		}
		if bytes.IndexByte(stops, c) >= 0 {
			return string(b), c, nil
		}
		b = append(b, c)
	}
	return "", 0, errors.New("relp: header token too long")
}

// close ends the session politely when it can (close, wait briefly for the
// rsp) and closes the socket.
func (s *relpSender) close() {
	if s.conn == nil {
		return
	}
	_ = s.conn.SetDeadline(time.Now().Add(time.Second))
	s.writeFrame(s.nextTxnr(), "close", nil)
	if s.w.Flush() == nil {
		_, _, _, _ = s.readFrame()
	}
	_ = s.conn.Close()
	s.conn = nil
}

func firstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i]
	}
	return b
}

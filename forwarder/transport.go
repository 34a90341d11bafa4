package forwarder

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// sender delivers syslog messages to one receiver over one transport.
//
// send delivers msgs in order and returns how many leading messages are
// delivered as far as the transport can tell: handed to the kernel (udp),
// acknowledged with "rsp 200" by the receiver (relp), or written (tcp,
// tls: a tracker, which confirms them later). It returns len(msgs), nil only when all are. On an error the
// connection is closed and the next send redials; the caller retries the
// undelivered rest, so a receiver may see some messages twice (with the
// same CEF externalId). send is called from one goroutine only; close
// releases the connection.
type sender interface {
	send(ctx context.Context, msgs [][]byte) (int, error)
	connected() bool
	close()
}

// kindError classifies an error for the errors_total{error_type} label.
type kindError struct {
	kind string
	err  error
}

func (e *kindError) Error() string { return e.kind + ": " + e.err.Error() }
func (e *kindError) Unwrap() error { return e.err }

func errorKind(err error) string {
	var ke *kindError
	if errors.As(err, &ke) {
		return ke.kind
	}
	return "write"
}

// newSender builds the sender for d. tlsConf is nil unless d.Transport is tls.
func newSender(d *Destination, tlsConf *tls.Config) sender {
	switch d.Transport {
	case TransportUDP:
		return &udpSender{dest: d}
	case TransportRELP:
		return &relpSender{dest: d}
	default:
		return &streamSender{dest: d, tls: tlsConf}
	}
}

// dialTCP connects with keepalive on, so a half-open connection (the peer
// host gone without a FIN) is found even while nothing is being written,
// and TCP_USER_TIMEOUT at write_timeout, so data the peer does not
// acknowledge fails the connection in that time, not after the kernel's
// retransmissions (about 15 minutes).
func dialTCP(ctx context.Context, d *Destination) (*net.TCPConn, error) {
	dialer := net.Dialer{
		Timeout:         d.DialTimeout,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: d.KeepAlive, Interval: d.KeepAlive / 3, Count: 3},
	}
	c, err := dialer.DialContext(ctx, "tcp", d.Address)
	if err != nil {
		return nil, &kindError{"dial", err}
	}
	tc := c.(*net.TCPConn)
	setUserTimeout(tc, d.WriteTimeout)
	return tc, nil
}

// tracker is a sender whose send only hands bytes to the kernel (tcp,
// tls): what it returns is written, not known delivered. The destination
// keeps what was written unconfirmed (un-acked in JetStream) until the
// tracker confirms it, and writes it again on a new connection when the
// old one fails, stalls or is closed.
type tracker interface {
	// position is the connection in use (a number that grows with every
	// new connection; 0: none) and the bytes written on it so far, TLS
	// records included.
	position() (conn, written uint64)
	// peerAcked is how many bytes of connection conn the peer's TCP has
	// acknowledged; ok is false once conn is closed.
	peerAcked(conn uint64) (acked uint64, ok bool)
	// checkStall closes the connection and returns an error when it has
	// bytes the peer has not acknowledged and that count has not shrunk
	// for write_timeout.
	checkStall(now time.Time) error
	// healthy checks the connection for a FIN or RST from the receiver
	// (receivers never send on a syslog connection) and closes it if so;
	// false then. No connection is healthy: the next send dials.
	healthy() bool
	// drain closes the connection gracefully: it half-closes it and waits
	// up to write_timeout for the receiver to close its side. A receiver
	// closes (FIN) only after it read everything up to our FIN; one that
	// closes with data unread resets instead. It returns the connection
	// and whether the receiver read everything written on it.
	drain() (conn uint64, read bool)
}

// countingConn counts the bytes written through it: with TLS, the records
// as they go to the kernel.
type countingConn struct {
	*net.TCPConn
	written uint64
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.TCPConn.Write(p)
	c.written += uint64(n)
	return n, err
}

// streamSender is syslog over TCP (RFC 6587) or TLS (RFC 5425), LF-framed
// or octet-counted.
//
// A write only hands bytes to the kernel. The receiver may still lose
// them: it dies with them unread, a proxy or relay in front of it holds
// them when it is cut, or the link freezes and the writes only fill socket
// buffers. So send reports them written, and the destination treats them
// as unconfirmed (tracker): the peer's TCP acknowledgements (SIOCOUTQ)
// show what reached it, a connection whose unacknowledged bytes do not
// shrink for write_timeout is treated as down, and a graceful close the
// receiver answers with its own shows it read everything. Before each send
// the connection is checked for a FIN or RST from the peer (receivers
// never send on a syslog connection), which catches a receiver that
// restarted between batches.
type streamSender struct {
	dest *Destination
	tls  *tls.Config
	conn net.Conn
	raw  *countingConn
	gen  uint64
	buf  []byte

	// Stall watch: the last unacknowledged count seen and when it last
	// shrank (or was zero).
	outq     int
	progress time.Time
}

func (s *streamSender) connected() bool { return s.conn != nil }

func (s *streamSender) healthy() bool {
	if s.conn != nil && !peerOpen(s.conn) {
		s.close()
		return false
	}
	return true
}

// send writes msgs. The caller checks healthy first: a connection the
// receiver closed would otherwise be replaced here, under alerts written
// on it that need writing again first.
func (s *streamSender) send(ctx context.Context, msgs [][]byte) (int, error) {
	if s.conn == nil {
		if err := s.dial(ctx); err != nil {
			return 0, err
		}
	}
	s.buf = s.buf[:0]
	for _, m := range msgs {
		s.buf = appendFrame(s.buf, m, s.dest.Framing)
	}
	// A receiver that stops reading fills both socket buffers and the
	// write times out: the batch is retried on a new connection.
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.dest.WriteTimeout))
	// A short write leaves the receiver with a partial frame we cannot
	// complete on a new connection: the whole batch counts as undelivered.
	if _, err := s.conn.Write(s.buf); err != nil {
		s.close()
		return 0, &kindError{"write", err}
	}
	return len(msgs), nil
}

func (s *streamSender) position() (uint64, uint64) {
	if s.conn == nil {
		return 0, 0
	}
	return s.gen, s.raw.written
}

func (s *streamSender) peerAcked(conn uint64) (uint64, bool) {
	if s.conn == nil || conn != s.gen {
		return 0, false
	}
	n, err := unackedBytes(s.raw.TCPConn)
	if err != nil {
		n = 0 // not known (not Linux): as before, written counts
	}
	return s.raw.written - min(uint64(n), s.raw.written), true
}

func (s *streamSender) checkStall(now time.Time) error {
	if s.conn == nil {
		return nil
	}
	n, err := unackedBytes(s.raw.TCPConn)
	if err != nil {
		return nil
	}
	if n == 0 || n < s.outq || s.progress.IsZero() {
		s.progress = now
	}
	s.outq = n
	if n > 0 && now.Sub(s.progress) >= s.dest.WriteTimeout {
		s.close()
		return &kindError{"stalled", fmt.Errorf("%d bytes written to %s not acknowledged for %s", n, s.dest.Address, s.dest.WriteTimeout)}
	}
	return nil
}

func (s *streamSender) drain() (uint64, bool) {
	if s.conn == nil {
		return 0, false
	}
	gen := s.gen
	defer s.close()
	var err error
	if tc, ok := s.conn.(*tls.Conn); ok {
		_ = tc.SetWriteDeadline(time.Now().Add(s.dest.WriteTimeout))
		err = tc.CloseWrite() // close_notify
	}
	if err == nil {
		err = s.raw.CloseWrite() // FIN
	}
	if err != nil {
		return gen, false
	}
	_ = s.conn.SetReadDeadline(time.Now().Add(s.dest.WriteTimeout))
	var buf [4096]byte
	for {
		_, err := s.conn.Read(buf[:])
		if errors.Is(err, io.EOF) {
			return gen, true
		}
		if err != nil {
			return gen, false
		}
	}
}

func (s *streamSender) dial(ctx context.Context) error {
	tcp, err := dialTCP(ctx, s.dest)
	if err != nil {
		return err
	}
	raw := &countingConn{TCPConn: tcp}
	s.gen++
	s.raw, s.outq, s.progress = raw, 0, time.Time{}
	if s.tls == nil {
		s.conn = raw
		return nil
	}
	tc := tls.Client(raw, s.tls)
	hctx, cancel := context.WithTimeout(ctx, s.dest.DialTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		_ = raw.Close()
		return &kindError{"tls", fmt.Errorf("TLS handshake with %s: %w", s.dest.Address, err)}
	}
	// In TLS 1.3 the client's handshake is done before the server has
	// checked the client certificate; a server that refuses it says so
	// with an alert one round trip later. Wait briefly for it, rather than
	// write alerts into a connection that is about to be torn down.
	if !peerOpenWithin(tc, tlsRejectWait) {
		_ = tc.Close()
		return &kindError{"tls", fmt.Errorf("TLS session with %s closed by the server right after the handshake (client certificate refused?)", s.dest.Address)}
	}
	s.conn = tc
	return nil
}

// tlsRejectWait is how long a new TLS session is watched for a refusal.
const tlsRejectWait = 300 * time.Millisecond

// peerOpen reports whether the receiver has not closed or reset the
// connection. Receivers never send on a syslog connection; under TLS what
// arrives is a session ticket (consumed by the read, harmlessly) or an
// alert (an error). A read timeout does not break a tls.Conn.
func peerOpen(c net.Conn) bool { return peerOpenWithin(c, time.Millisecond) }

func peerOpenWithin(c net.Conn, wait time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(wait))
	defer c.SetReadDeadline(time.Time{})
	var buf [4096]byte
	for range 16 { // drain what the peer sent, bounded
		_, err := c.Read(buf[:])
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return true
		}
		if err != nil {
			return false
		}
	}
	return true // a chatty receiver is odd but not fatal
}

func (s *streamSender) close() {
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn, s.raw = nil, nil
	}
}

package forwarder

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"
)

// sender delivers syslog messages to one receiver over one transport.
//
// send delivers msgs in order and returns how many leading messages are
// delivered as far as the transport can tell: written and flushed to the
// kernel (tcp, tls, udp), or acknowledged with "rsp 200" by the receiver
// (relp). It returns len(msgs), nil only when all are. On an error the
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
// host gone without a FIN) is found even while nothing is being written.
func dialTCP(ctx context.Context, d *Destination) (*net.TCPConn, error) {
	dialer := net.Dialer{
		Timeout:         d.DialTimeout,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: d.KeepAlive, Interval: d.KeepAlive / 3, Count: 3},
	}
	c, err := dialer.DialContext(ctx, "tcp", d.Address)
	if err != nil {
		return nil, &kindError{"dial", err}
	}
	return c.(*net.TCPConn), nil
}

// streamSender is syslog over TCP (RFC 6587) or TLS (RFC 5425), LF-framed
// or octet-counted.
//
// "Written and flushed" is all plain TCP can promise: the kernel accepted
// the bytes. If the receiver dies with them unread they are lost, and
// nothing on the wire says so. Before each send the connection is checked
// for a FIN or RST from the peer (receivers never send on a syslog
// connection), which catches a receiver that restarted between batches,
// and the write deadline catches a receiver that stopped reading. Users who
// must prove nothing was lost use relp.
type streamSender struct {
	dest *Destination
	tls  *tls.Config
	conn net.Conn
	buf  []byte
}

func (s *streamSender) connected() bool { return s.conn != nil }

func (s *streamSender) send(ctx context.Context, msgs [][]byte) (int, error) {
	if s.conn != nil && !peerOpen(s.conn) {
		s.close()
	}
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

func (s *streamSender) dial(ctx context.Context) error {
	raw, err := dialTCP(ctx, s.dest)
	if err != nil {
		return err
	}
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
		s.conn = nil
	}
}

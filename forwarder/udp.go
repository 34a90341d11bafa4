package forwarder

import (
	"context"
	"net"
	"time"
)

// udpSender is syslog over UDP (RFC 5426): one message per datagram.
//
// UDP is lossy and documented as such: "delivered" means the kernel took
// the datagram. A datagram lost on the link, or dropped by a receiver whose
// socket buffer is full, is gone without a trace. The one thing we do get
// is an ICMP port-unreachable on a connected socket, which shows up as an
// error on a later write: then the batch is retried like a TCP failure, so
// a receiver that is down (rather than lossy) does not swallow alerts.
// Messages are capped at max_message_size (default 2048) to stay clear of
// IP fragmentation, which loses the whole datagram if one fragment is lost.
type udpSender struct {
	dest *Destination
	conn *net.UDPConn
}

func (s *udpSender) connected() bool { return s.conn != nil }

func (s *udpSender) send(ctx context.Context, msgs [][]byte) (int, error) {
	if s.conn == nil {
		var d net.Dialer
		c, err := d.DialContext(ctx, "udp", s.dest.Address)
		if err != nil {
			return 0, &kindError{"dial", err}
		}
		s.conn = c.(*net.UDPConn)
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.dest.WriteTimeout))
	for i, m := range msgs {
		if _, err := s.conn.Write(m); err != nil {
			s.close()
			return i, &kindError{"write", err}
		}
	}
	return len(msgs), nil
}

func (s *udpSender) close() {
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn = nil
	}
}

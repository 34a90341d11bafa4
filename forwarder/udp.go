package forwarder

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"
)

// udpSender is syslog over UDP (RFC 5426): one message per datagram.
//
// UDP is lossy and documented as such: "delivered" means the kernel took
// the datagram. A datagram lost on the link, or dropped by a receiver whose
// socket buffer is full, is gone without a trace. The one thing we do get
// is an ICMP port-unreachable on a connected socket, which shows up as an
// error on a later write or read: then the whole batch is retried like a
// TCP failure, so a receiver that is down (rather than lossy) does not
// swallow alerts. A refusal that takes longer than udpProbe to come back
// (a long WAN path) is missed.
// Messages are capped at max_message_size (default 2048) to stay clear of
// IP fragmentation, which loses the whole datagram if one fragment is lost.
type udpSender struct {
	dest *Destination
	conn *net.UDPConn
}

func (s *udpSender) connected() bool { return s.conn != nil }

// udpProbe is how long send waits after a batch for an ICMP refusal of it.
const udpProbe = 20 * time.Millisecond

func (s *udpSender) send(ctx context.Context, msgs [][]byte) (int, error) {
	if s.conn == nil {
		var d net.Dialer
		c, err := d.DialContext(ctx, "udp", s.dest.Address)
		if err != nil {
			return 0, &kindError{"dial", err}
		}
		s.conn = c.(*net.UDPConn)
	}
	// A refusal reports an earlier datagram, not the one being written, and
	// not which: so any refusal fails the whole batch (sent again; the SIEM
	// may see some twice, with their externalId). The socket stays open so
	// the refusals of a receiver that is still down keep surfacing.
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.dest.WriteTimeout))
	for _, m := range msgs {
		if _, err := s.conn.Write(m); err != nil {
			if !errors.Is(err, syscall.ECONNREFUSED) {
				s.close()
			}
			return 0, &kindError{"write", err}
		}
	}
	// The refusal of the batch's last datagrams arrives after the writes;
	// wait a moment for it on the socket before calling the batch sent.
	_ = s.conn.SetReadDeadline(time.Now().Add(udpProbe))
	var one [1]byte
	if _, err := s.conn.Read(one[:]); errors.Is(err, syscall.ECONNREFUSED) {
		return 0, &kindError{"write", err}
	}
	return len(msgs), nil
}

func (s *udpSender) close() {
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn = nil
	}
}

package syslog

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// readRetryDelay spaces out retries after a failed socket read or accept,
// so a persistent error does not spin a core.
const readRetryDelay = 100 * time.Millisecond

// maxDatagram is more than any UDP payload (65,507 bytes over IPv4, 65,527
// over IPv6 without jumbograms).
const maxDatagram = 64 << 10

// serveUDP reads datagrams until the socket is closed or the sink fails.
// One datagram is one message.
func (r *run) serveUDP(conn *net.UDPConn, allow allowList) {
	limit := int(r.cfg.MaxMessageSize)
	// One byte more than the limit, so a datagram that does not fit is
	// seen to be too long instead of silently arriving truncated. Beyond
	// maxDatagram no datagram can exceed the limit.
	buf := make([]byte, min(limit+1, maxDatagram))
	oob := make([]byte, oobSize)
	var drops uint32 // the kernel's drop count last seen; it counts from 0 per socket
	p := r.newParser()
	var lastPeer netip.AddrPort
	var sender string
	allowed := allow.allows(lastPeer.Addr())
	for {
		n, oobn, _, peer, err := conn.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || r.ctx.Err() != nil {
				return
			}
			r.m.errors.WithLabelValues(errRead).Inc()
			r.logProblem(errRead, "reading syslog datagram failed", "err", err)
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(readRetryDelay):
			}
			continue
		}
		received := time.Now()
		r.m.bytesUDP.Add(float64(n))
		if d, ok := kernelDrops(oob[:oobn]); ok && d != drops {
			r.m.kernelDrops.Add(float64(d - drops)) // uint32 arithmetic survives a wrap
			drops = d
		}
		if peer != lastPeer { // most traffic comes from few peers: reuse the string
			lastPeer, sender = peer, senderOf(peer)
			allowed = allow.allows(peer.Addr())
		}
		if !allowed {
			r.m.rejectedDatagrams.WithLabelValues(rejectNotAllow).Inc()
			r.logProblem("rejected_datagram_"+rejectNotAllow, "syslog datagram dropped: the sender is not in allow",
				"sender", sender, "listener", conn.LocalAddr().String())
			continue
		}
		if n > limit {
			reason := fmt.Sprintf("%s: datagram longer than the limit of %d bytes", KindOversize, limit)
			err = r.reject(KindOversize, reason, buf[:min(n, sampleSize)], sender)
		} else {
			err = r.deliver(p, buf[:n], received, sender, r.m.eventsUDP)
		}
		if err != nil {
			return // the sink failed; Run is stopping
		}
	}
}

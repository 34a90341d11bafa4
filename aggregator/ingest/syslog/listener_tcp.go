package syslog

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// errShuttingDown ends a connection's reads when Run stops.
var errShuttingDown = errors.New("syslog source shutting down")

// serveTCP accepts connections until the listener is closed. Each
// connection gets one goroutine, counted in wg so Run waits for it.
func (r *run) serveTCP(l net.Listener, wg *sync.WaitGroup) {
	var delay time.Duration
	for {
		conn, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || r.ctx.Err() != nil {
				return
			}
			// Typically EMFILE: back off, as net/http does, and retry.
			r.m.errors.WithLabelValues(errAccept).Inc()
			r.logProblem(errAccept, "accepting a syslog connection failed", "err", err)
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		if r.open.Add(1) > int64(r.cfg.MaxConnections) {
			r.open.Add(-1)
			r.m.rejectedConns.Inc()
			r.logProblem("rejected", "syslog connection rejected: max_connections are open",
				"sender", connSender(conn), "max_connections", r.cfg.MaxConnections)
			conn.Close()
			continue
		}
		r.m.openConns.Inc()
		wg.Go(func() {
			defer func() {
				r.open.Add(-1)
				r.m.openConns.Dec()
			}()
			r.serveConn(conn)
		})
	}
}

// serveConn reads frames from one connection until the peer closes it, it
// stays idle too long, reading fails, the sink fails, or Run stops. When
// Run stops, the frames already buffered are still delivered: reads from
// the socket fail at once, so only what was received before is processed.
func (r *run) serveConn(conn net.Conn) {
	defer conn.Close()
	sender := connSender(conn)
	cr := &connReader{conn: conn, idle: r.cfg.IdleTimeout, bytes: r.m.bytesTCP}
	stop := context.AfterFunc(r.ctx, cr.shutdown)
	defer stop()
	fr := NewFramer(cr, int(r.cfg.MaxMessageSize))
	p := r.newParser()
	for {
		frame, err := fr.Next()
		var fe *FrameError
		switch {
		case err == nil:
			err = r.deliver(p, frame, time.Now(), sender, r.m.eventsTCP)
		case errors.As(err, &fe):
			err = r.reject(fe.Kind, fe.Error(), fe.Sample, sender)
		case err == io.EOF, cr.closing.Load():
			return
		case errors.Is(err, os.ErrDeadlineExceeded) && r.cfg.IdleTimeout > 0:
			return // idle for too long: routine, not worth a line
		default:
			r.m.errors.WithLabelValues(errRead).Inc()
			r.logProblem(errRead, "reading syslog connection failed", "sender", sender, "err", err)
			return
		}
		if err != nil {
			return // the sink failed; Run is stopping
		}
	}
}

func connSender(conn net.Conn) string {
	if a, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		return senderOf(a.AddrPort())
	}
	return conn.RemoteAddr().String()
}

// connReader is the connection as the Framer sees it: it counts bytes,
// applies the idle timeout, and fails every read once Run stops.
type connReader struct {
	conn    net.Conn
	idle    time.Duration
	bytes   prometheus.Counter
	closing atomic.Bool
}

func (c *connReader) Read(p []byte) (int, error) {
	if c.idle > 0 {
		c.conn.SetReadDeadline(time.Now().Add(c.idle))
	}
	// Checked after setting the deadline. shutdown stores closing, then
	// sets a deadline in the past: either this load sees closing, or that
	// past deadline comes after ours and the Read below fails at once.
	if c.closing.Load() {
		return 0, errShuttingDown
	}
	n, err := c.conn.Read(p)
	c.bytes.Add(float64(n))
	return n, err
}

// shutdown makes the current and every later Read fail.
func (c *connReader) shutdown() {
	c.closing.Store(true)
	c.conn.SetReadDeadline(time.Unix(1, 0))
}

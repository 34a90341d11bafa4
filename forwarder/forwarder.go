// Package forwarder sends alerts to the on-prem SIEM: a durable JetStream
// consumer on ALERTS, the CEF encoder (forwarder/cef), a syslog frame and a
// TCP connection that is redialled with backoff.
//
// Delivery contract: alerts go out in stream order; a batch is acked only
// after all its bytes were written to the socket without error. While the
// receiver is unreachable the batch in hand is retried forever (its ack
// deadline kept alive) and the rest waits in JetStream, bounded by the
// ALERTS stream's limits. A write the kernel accepted just before the peer
// died can still be lost, as with any plain-TCP syslog; before each batch the
// connection is checked for a FIN or RST from the peer, which catches the
// common case of a restarted receiver. Replays after a crash carry the same
// CEF externalId, so the SIEM can drop duplicates.
package forwarder

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/forwarder/cef"
)

// Forwarder delivers ALERTS to one destination.
type Forwarder struct {
	cfg      Config
	dest     Destination
	facility int
	bus      *bus.Bus
	enc      *cef.Encoder
	log      *slog.Logger

	conn net.Conn // owned by the one consuming goroutine
	buf  []byte

	sentAlerts prometheus.Counter
	sentBytes  prometheus.Counter
	connected  prometheus.Gauge
	errs       *prometheus.CounterVec
	lastErrLog time.Time
}

// New returns a forwarder for cfg.Destination. cfg must have been validated.
func New(cfg Config, version string, b *bus.Bus, logger *slog.Logger, reg prometheus.Registerer) (*Forwarder, error) {
	enc, err := cef.NewEncoder(cef.Options{
		Vendor: cfg.Vendor, Product: "Outpost", Version: version,
		DeviceExternalID: cfg.Instance, DeviceHost: cfg.Hostname,
	})
	if err != nil {
		return nil, err
	}
	d := cfg.Destination
	labels := prometheus.Labels{"destination": d.Name}
	f := &Forwarder{
		cfg: cfg, dest: d, facility: facilities[d.Facility], bus: b, enc: enc,
		log: logger.With("component", "forwarder", "destination", d.Name),
		sentAlerts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_forwarder_sent_alerts_total", Help: "Alerts written to the destination.", ConstLabels: labels,
		}),
		sentBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_forwarder_sent_bytes_total", Help: "Bytes written to the destination, framing included.", ConstLabels: labels,
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_forwarder_connected", Help: "1 while a connection to the destination is open.", ConstLabels: labels,
		}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_forwarder_errors_total", Help: "Failed dials and writes, by type.", ConstLabels: labels,
		}, []string{"error_type"}),
	}
	trunc := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "outpost_forwarder_cef_truncations_total", Help: "CEF values truncated to the standard's length limits.", ConstLabels: labels,
	}, func() float64 { return float64(enc.Truncations()) })
	reg.MustRegister(f.sentAlerts, f.sentBytes, f.connected, f.errs, trunc)
	return f, nil
}

// Run consumes ALERTS until ctx ends, then closes the connection.
func (f *Forwarder) Run(ctx context.Context) error {
	defer f.closeConn()
	return f.bus.Consume(ctx, bus.ConsumerConfig{
		Stream:  bus.StreamAlerts,
		Durable: "outpost-forwarder-" + f.dest.Name,
		Batch:   128,
		AckWait: time.Minute,
	}, f.log, f.handle)
}

func (f *Forwarder) handle(ctx context.Context, msgs []jetstream.Msg) error {
	f.buf = f.buf[:0]
	n := 0
	for _, m := range msgs {
		var a event.Alert
		if err := json.Unmarshal(m.Data(), &a); err != nil {
			if err := f.bus.DeadLetter(ctx, "forwarder", err.Error(), m.Data(), ""); err != nil {
				return err
			}
			continue
		}
		f.buf = f.appendFrame(f.buf, &a, time.Now())
		n++
	}
	if n == 0 {
		return nil
	}
	backoff := bus.Backoff{Min: 100 * time.Millisecond, Max: f.dest.BackoffMax}
	lastProgress := time.Now()
	for attempt := 0; ; attempt++ {
		err := f.write(f.buf)
		if err == nil {
			f.sentAlerts.Add(float64(n))
			f.sentBytes.Add(float64(len(f.buf)))
			if attempt > 0 {
				f.log.Info("destination reachable again; backlog is being delivered", "attempts", attempt)
			}
			return nil
		}
		f.logErr(err)
		// Keep the batch ours while we wait: no redelivery, no reordering.
		if time.Since(lastProgress) > 20*time.Second {
			for _, m := range msgs {
				_ = m.InProgress()
			}
			lastProgress = time.Now()
		}
		if err := backoff.Sleep(ctx, attempt); err != nil {
			return err
		}
	}
}

// write sends b on the current connection, dialling first if needed.
func (f *Forwarder) write(b []byte) error {
	if f.conn != nil && !peerOpen(f.conn) {
		f.closeConn()
	}
	if f.conn == nil {
		c, err := net.DialTimeout("tcp", f.dest.Address, f.dest.DialTimeout)
		if err != nil {
			f.errs.WithLabelValues("dial").Inc()
			return err
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetKeepAlivePeriod(30 * time.Second)
			_ = tc.SetKeepAlive(true)
		}
		f.conn = c
		f.connected.Set(1)
	}
	_ = f.conn.SetWriteDeadline(time.Now().Add(f.dest.WriteTimeout))
	if _, err := f.conn.Write(b); err != nil {
		f.errs.WithLabelValues("write").Inc()
		f.closeConn()
		return err
	}
	return nil
}

// peerOpen reports whether the receiver has not closed or reset the
// connection. Receivers never send on a syslog connection, so a read that
// returns anything but a timeout means the connection is gone.
func peerOpen(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
	var one [1]byte
	_, err := c.Read(one[:])
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return err == nil // data from a receiver is odd but not fatal
}

func (f *Forwarder) closeConn() {
	if f.conn != nil {
		_ = f.conn.Close()
		f.conn = nil
		f.connected.Set(0)
	}
}

func (f *Forwarder) logErr(err error) {
	if time.Since(f.lastErrLog) < 30*time.Second {
		return
	}
	f.lastErrLog = time.Now()
	if errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded) {
		f.log.Warn("destination stopped accepting; alerts wait in JetStream and will be retried", "address", f.dest.Address, "err", err)
		return
	}
	f.log.Warn("destination unreachable; alerts wait in JetStream and will be retried", "address", f.dest.Address, "err", err)
}

// appendFrame appends one syslog message carrying a's CEF, framed for TCP.
//
// RFC 5424: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG, with
// APP-NAME "outpost", MSGID "CEF", no structured data, and the CEF line as
// MSG without a BOM (receivers look for "CEF:" at the start of MSG).
func (f *Forwarder) appendFrame(dst []byte, a *event.Alert, now time.Time) []byte {
	start := len(dst)
	if f.dest.Framing == FramingOctetCounting {
		// Reserve room for the length prefix; fixed up below.
		dst = append(dst, "0000000000 "...)
	}
	msgStart := len(dst)
	pri := f.facility*8 + cef.SyslogSeverity(a.Severity)
	dst = append(dst, '<')
	dst = strconv.AppendInt(dst, int64(pri), 10)
	dst = append(dst, ">1 "...)
	dst = now.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
	dst = append(dst, ' ')
	dst = append(dst, f.cfg.Hostname...)
	dst = append(dst, " outpost - CEF - "...)
	dst = f.enc.Append(dst, a)
	if f.dest.Framing == FramingLF {
		return append(dst, '\n')
	}
	prefix := strconv.AppendInt(nil, int64(len(dst)-msgStart), 10)
	prefix = append(prefix, ' ')
	// Shift the message left over the unused part of the reservation.
	n := copy(dst[start:], prefix)
	copy(dst[start+n:], dst[msgStart:])
	return dst[:len(dst)-(msgStart-start-n)]
}

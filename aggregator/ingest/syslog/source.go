// Package syslog is Outpost's syslog source: it receives syslog over UDP and
// TCP, parses RFC 5424 and RFC 3164 messages into events, recognizes a few
// security-relevant lines (sshd logons), and hands the events to a Sink.
//
// The pieces that touch no socket are exported so they can be tested and
// fuzzed alone: Framer splits a TCP stream into messages, Parser turns one
// message into an event.
package syslog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/config"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/ingest/instrument"
)

// Sink is where the source hands what it read.
//
// Publish blocks while the bus applies backpressure and returns an error
// only when ctx ends or the bus is gone; the source then stops reading (it
// does not drop input silently). ev is only valid during the call: the
// source parses the next message into the same memory, Attrs map
// included, so a sink copies what it keeps (its strings it may keep: they
// are new for each event).
//
// DeadLetter keeps input that could not be parsed or framed, with the
// reason, for a user to inspect. reason is "<kind>: <detail>", kind being
// an error_type label value such as "oversize" or "rfc5424". raw is only
// valid during the call.
type Sink interface {
	Publish(ctx context.Context, ev *event.Event) error
	DeadLetter(ctx context.Context, source, reason string, raw []byte, sender string) error
}

const (
	// drainTimeout bounds how long Run waits, after ctx ends, for the
	// input already read to be published before it gives up on it.
	drainTimeout = 5 * time.Second
	// logEvery is how often a repeated problem of one kind is logged.
	logEvery = time.Minute
	// sampleLogSize is how much of a bad message a log line quotes.
	sampleLogSize = 200
)

// Source receives syslog on the configured UDP and TCP addresses.
type Source struct {
	cfg   Config
	loc   *time.Location
	sink  Sink
	log   *slog.Logger
	m     *metrics
	limit *instrument.LogLimiter

	// drainTimeout bounds the publishing of what was read after ctx ends;
	// TCP connections are drained for the first half of it.
	drainTimeout time.Duration

	mu        sync.Mutex
	listening bool
	started   bool
	udp       []*net.UDPConn
	udpAllow  []allowList // per socket in udp; nil: any sender
	streams   []*streamListener

	tls tlsSet // the TLS of the tls and relp listeners, reloaded together

	audit *auditJoiner // joins the records of one audit event

	// attrs is the attributes the running rules read (SetAttributes);
	// nil keeps them all.
	attrs atomic.Pointer[attrFilter]
}

// streamListener is a TCP listener and what it speaks: syslog over TCP,
// syslog over TLS, or RELP (plain or TLS).
type streamListener struct {
	net.Listener
	transport string     // "tcp", "tls" or "relp": the metrics' label
	allow     allowList  // nil: any sender
	tls       *tlsServer // nil: plain
	relp      bool
}

// New validates cfg, registers the source's metrics on reg and returns the
// source. It does no I/O. A nil logger discards; a nil reg registers
// nothing.
func New(cfg Config, sink Sink, logger *slog.Logger, reg prometheus.Registerer) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if sink == nil {
		return nil, errors.New("syslog: a sink is required")
	}
	loc, err := time.LoadLocation(cfg.Timezone)
	if err != nil {
		return nil, fmt.Errorf("loading ingest.syslog.timezone: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	if len(cfg.RELP) > 0 {
		if _, ok := sink.(Flusher); !ok {
			return nil, errors.New("syslog: RELP listeners need a sink that can confirm what it holds (a Flusher)")
		}
	}
	s := &Source{
		cfg:   cfg,
		loc:   loc,
		sink:  sink,
		log:   logger.With("component", "syslog"),
		m:     m,
		limit: instrument.NewLogLimiter(logEvery),

		drainTimeout: drainTimeout,
		audit:        newAuditJoiner(),
	}
	add := func(listen string, f TLSFiles) error {
		srv := &tlsServer{listen: listen, files: f, expiry: m.tlsExpiry.WithLabelValues(listen)}
		_, leaf, err := srv.load()
		if err != nil {
			return fmt.Errorf("ingest.syslog TLS listener %s: %w", listen, err)
		}
		// Taken at start (the other listeners must run), but said.
		warnExpiry(s, listen, leaf)
		if err := usable(leaf, time.Now()); err != nil && time.Now().Before(leaf.NotAfter) {
			s.log.Error("the TLS listener's certificate will be refused by clients", "listener", listen, "err", err)
		}
		if f.ClientCAFile != "" {
			if err := caUsable(f.ClientCAFile, time.Now()); err != nil {
				s.log.Error("the TLS listener will refuse every client", "listener", listen, "err", err)
			}
		}
		s.tls.servers = append(s.tls.servers, srv)
		return nil
	}
	for _, l := range cfg.TLS {
		if err := add(l.Listen, l.TLSFiles); err != nil {
			return nil, err
		}
	}
	for _, l := range cfg.RELP {
		if l.TLS != nil {
			if err := add(l.Listen, *l.TLS); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// Flusher is a Sink that can say when what it was handed is safe: Flush
// returns once every event and dead letter handed to it before the call
// is persisted (in JetStream), or with the error that kept it from that.
// RELP listeners need one, to acknowledge only what is safe.
type Flusher interface {
	Flush(ctx context.Context) error
}

// Listen opens every configured socket. It is idempotent; Run calls it if
// it has not been called. If one address fails, none stays open.
func (s *Source) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listening {
		return nil
	}
	if s.started {
		return errors.New("syslog: the source has stopped")
	}
	var lc net.ListenConfig
	capped := 0 // the smallest receive buffer the kernel granted below the ask
	for _, addr := range s.cfg.UDP {
		pc, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			s.closeSockets()
			return fmt.Errorf("opening syslog listener: %w", err)
		}
		uc := pc.(*net.UDPConn)
		// The kernel silently caps it at net.core.rmem_max: read it back.
		_ = uc.SetReadBuffer(int(s.cfg.UDPReadBuffer))
		if got, err := readBuffer(uc); err == nil && got < int(s.cfg.UDPReadBuffer) && (capped == 0 || got < capped) {
			capped = got
		}
		// Without it, drops are still in /proc/net/snmp, only not ours.
		_ = countKernelDrops(uc)
		s.udp = append(s.udp, uc)
		s.udpAllow = append(s.udpAllow, s.cfg.allow[addr])
	}
	listen := func(addr, transport string, srv *tlsServer, relp bool) error {
		l, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			s.closeSockets()
			return fmt.Errorf("opening syslog %s listener: %w", transport, err)
		}
		s.streams = append(s.streams, &streamListener{Listener: l, transport: transport,
			allow: s.cfg.allow[addr], tls: srv, relp: relp})
		return nil
	}
	for _, addr := range s.cfg.TCP {
		if err := listen(addr, "tcp", nil, false); err != nil {
			return err
		}
	}
	servers := s.tls.servers
	for _, l := range s.cfg.TLS {
		if err := listen(l.Listen, "tls", servers[0], false); err != nil {
			return err
		}
		servers = servers[1:]
	}
	for _, l := range s.cfg.RELP {
		var srv *tlsServer
		if l.TLS != nil {
			srv, servers = servers[0], servers[1:]
		}
		if err := listen(l.Listen, "relp", srv, true); err != nil {
			return err
		}
	}
	s.listening = true
	if capped > 0 {
		s.log.Warn("the kernel capped the UDP receive buffer: bursts beyond it are dropped (counted in outpost_syslog_udp_kernel_drops_total); raise net.core.rmem_max to at least udp_read_buffer",
			"udp_read_buffer", s.cfg.UDPReadBuffer.String(), "granted", config.ByteSize(capped).String(),
			"fix", fmt.Sprintf("sysctl -w net.core.rmem_max=%d", int64(s.cfg.UDPReadBuffer)))
	}
	return nil
}

// Addrs returns the addresses the sockets are bound to, in config order,
// once Listen has been called; with port 0 in the config they tell the
// port the system chose.
func (s *Source) Addrs() (udp, tcp []net.Addr) {
	s.mu.Lock()
	for _, c := range s.udp {
		udp = append(udp, c.LocalAddr())
	}
	s.mu.Unlock()
	return udp, s.ListenAddrs("tcp")
}

// ListenAddrs returns the addresses of the stream listeners of one
// transport ("tcp", "tls" or "relp"), in config order, once Listen has
// been called.
func (s *Source) ListenAddrs(transport string) []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for _, l := range s.streams {
		if l.transport == transport {
			out = append(out, l.Addr())
		}
	}
	return out
}

func (s *Source) closeSockets() {
	for _, c := range s.udp {
		c.Close()
	}
	for _, l := range s.streams {
		l.Close()
	}
	s.udp, s.udpAllow, s.streams = nil, nil, nil
	s.listening = false
}

// Run serves until ctx is done. Then it stops in order: it closes the
// listeners, drains each connection (reads what the kernel has received
// until the connection is quiet, frames it) and closes it, waits for every
// goroutine, and returns nil. Input read is published with up to 5 s of
// grace after ctx ends, so a blocked bus cannot hold shutdown forever;
// connections are drained for the first half of it, and lines the bound
// cuts off are counted (outpost_syslog_shutdown_cut_lines_total).
//
// If the sink fails while ctx is still live (the bus is gone), Run stops
// the same way and returns that error. Run can be called once.
func (s *Source) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("syslog: Run called twice")
	}
	s.started = true
	udp, udpAllow, streams := s.udp, s.udpAllow, s.streams
	s.mu.Unlock()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Publishing outlives ctx by up to drainTimeout, so what was read
	// before the stop still reaches the bus.
	pubCtx, stopPub := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPub()
	r := &run{Source: s, ctx: runCtx, cancel: cancel, pubCtx: pubCtx,
		conns: newConnTable(s.cfg.MaxConnections, s.cfg.MaxConnectionsPerSource, s.m.openConns)}

	var wg, parsers sync.WaitGroup
	r.chunks = make(chan *chunk, 2*parseWorkers)
	for range parseWorkers {
		parsers.Go(r.parseChunks)
	}
	for i, c := range udp {
		wg.Go(func() { r.serveUDP(c, udpAllow[i]) })
	}
	for _, l := range streams {
		wg.Go(func() { r.serveTCP(l, &wg) })
	}
	watchDone := make(chan struct{})
	var watch sync.WaitGroup
	watch.Go(func() { s.watchTLS(watchDone) })
	defer func() { close(watchDone); watch.Wait() }()

	<-runCtx.Done()
	s.mu.Lock()
	s.closeSockets() // ends Accept and ReadFrom; connections watch runCtx
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(r.chunks) // the readers are gone; the parsers finish what they hold
		parsers.Wait()
		close(done)
	}()
	drain := time.NewTimer(s.drainTimeout)
	defer drain.Stop()
	select {
	case <-done:
	case <-drain.C:
		stopPub() // unblock publishes stuck on a bus that does not drain
		<-done
	}

	for kind, n := range s.limit.Flush() {
		s.log.Warn("syslog problems since the last report", "error_type", kind, "count", n)
	}
	return r.failure()
}

// run is the state of one Run.
type run struct {
	*Source
	ctx    context.Context // ends when Run must stop reading
	cancel context.CancelFunc
	pubCtx context.Context // ends drainTimeout after ctx, for publishing what was read
	conns  *connTable      // open TCP connections
	chunks chan *chunk     // TCP frames on their way to the parsers

	failMu sync.Mutex
	failed error
}

// fail stops the source because of err, unless it is already stopping.
func (r *run) fail(err error) {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	if r.ctx.Err() == nil && r.failed == nil {
		r.failed = err
	}
	r.cancel()
}

func (r *run) failure() error {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	return r.failed
}

func (r *run) newParser() *Parser {
	p := NewParser(WithLocation(r.loc), WithReusedAttrs())
	fallbackErrors := r.m.errors.WithLabelValues(errFallback)
	p.fallback = func() {
		r.m.fallback.Inc()
		fallbackErrors.Inc() // still an event, but the input was not syslog
	}
	p.payload = func(format string, parsed bool) {
		if parsed {
			r.m.formats.WithLabelValues(format).Inc()
		} else {
			r.m.formatFallback.WithLabelValues(format).Inc()
		}
	}
	p.attrs = &r.attrs
	p.dropped = func(n int) { r.m.attrsDropped.Add(float64(n)) }
	return p
}

// deliver parses one message and publishes it. It returns an error only
// when the sink failed, and then the reader that called it must stop.
func (r *run) deliver(p *Parser, msg []byte, received time.Time, sender string, events prometheus.Counter) error {
	ev := &p.scratch
	ok, err := r.parse(p, msg, received, sender, ev)
	if !ok {
		return err
	}
	return r.publish(ev, events)
}

// parse parses one message into ev and reports whether it gave an event;
// a message that does not parse is rejected (counted, logged,
// dead-lettered) and gives none. The error is the sink's, from
// dead-lettering.
func (r *run) parse(p *Parser, msg []byte, received time.Time, sender string, ev *event.Event) (bool, error) {
	msg = trimTrailer(msg)
	if len(msg) == 0 {
		return false, nil
	}
	if err := p.Parse(msg, received, sender, ev); err != nil {
		return false, r.reject(errRFC5424, err.Error(), msg, sender)
	}
	return true, nil
}

// publish counts ev and hands it to the sink; an error is the sink's.
func (r *run) publish(ev *event.Event, events prometheus.Counter) error {
	events.Inc()
	// Here, not in the parsers: events are published in each connection's
	// order, which is the order of an audit event's records.
	r.audit.join(ev)
	if err := r.sink.Publish(r.pubCtx, ev); err != nil {
		return r.sinkFailed("publishing event", err)
	}
	return nil
}

// reject counts bad input, logs it (rate-limited) and dead-letters it.
// Like deliver, it returns an error only when the sink failed.
func (r *run) reject(kind, reason string, raw []byte, sender string) error {
	r.m.errors.WithLabelValues(kind).Inc()
	r.logProblem(kind, "bad syslog input dead-lettered",
		"sender", sender, "reason", reason, "sample", string(raw[:min(len(raw), sampleLogSize)]))
	raw = raw[:min(len(raw), int(r.cfg.MaxMessageSize))]
	if err := r.sink.DeadLetter(r.pubCtx, SourceName, reason, raw, sender); err != nil {
		return r.sinkFailed("dead-lettering input", err)
	}
	return nil
}

// sinkFailed handles a sink error. While the source runs it means the bus
// is gone: the source stops and Run returns the error (so it is not logged
// here). During shutdown it means the drain timed out: input is lost, and
// that is logged.
func (r *run) sinkFailed(what string, err error) error {
	r.m.errors.WithLabelValues(errPublish).Inc()
	err = fmt.Errorf("%s: %w", what, err)
	if r.ctx.Err() == nil {
		r.fail(err)
		return err
	}
	r.logProblem(errPublish, "syslog input lost at shutdown", "err", err)
	return err
}

// cutLines counts n TCP lines read at shutdown that the stop timeout kept
// from the bus.
func (r *run) cutLines(n int) {
	r.m.shutdownCut.Add(float64(n))
	r.logProblem(errShutdownCut, "syslog lines cut at shutdown by the stop timeout", "lines", n)
}

// logProblem logs one occurrence of a problem of the given kind, unless
// the kind was logged less than a minute ago; the next line then carries
// the count of what was not logged.
func (s *Source) logProblem(kind, msg string, args ...any) {
	n, ok := s.limit.Allow(kind)
	if !ok {
		return
	}
	s.log.Warn(msg, append([]any{"error_type", kind, "count", n}, args...)...)
}

// trimTrailer strips the CR, LF and NUL bytes senders leave at the end of
// a datagram or an octet-counted frame.
func trimTrailer(b []byte) []byte {
	for len(b) > 0 {
		switch b[len(b)-1] {
		case '\r', '\n', 0:
			b = b[:len(b)-1]
		default:
			return b
		}
	}
	return b
}

// senderOf renders a peer address as ip:port, with an IPv4 address that
// reached a dual-stack socket shown as IPv4.
func senderOf(ap netip.AddrPort) string {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
}

// Metrics returns the source's component metrics (events and bytes
// received), for the link economy the pipeline reports.
func (s *Source) Metrics() *instrument.Component { return s.m.component }

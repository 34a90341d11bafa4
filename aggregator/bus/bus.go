// Package bus wires Outpost to NATS JetStream: it starts the embedded server
// (or connects to an external cluster), keeps the streams in the shape the
// config asks for, and gives stages a publisher and a batch consumer.
//
// Streams and subjects:
//
//	EVENTS      events.<source>      normalized events, work queue, consumed by the rule filter
//	MATCHES     matches.<partition>  rule matches, work queue, partitioned by hash(rule, key)
//	ALERTS      alerts.<severity>    derived alerts, kept by limits for replay, one consumer per destination
//	DEADLETTER  deadletter.<source>  input that could not be parsed, kept for a user to look at
//
// EVENTS and MATCHES are work queues with DiscardNew: when a stage falls
// behind by max_bytes, publishing blocks and the backpressure reaches the
// sources instead of silently deleting unprocessed data. ALERTS keeps
// delivered alerts until max_age for audit and replay and, when full, drops
// the oldest (see docs/operations.md); DEADLETTER drops the oldest.
//
// The embedded server has no anonymous user: only Outpost's own in-process
// connection may publish or change anything, and nats.listen opens the
// client port to a read-only key only (auth.go).
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// Stream names.
const (
	StreamEvents     = "EVENTS"
	StreamMatches    = "MATCHES"
	StreamAlerts     = "ALERTS"
	StreamDeadLetter = "DEADLETTER"
	// StreamStateLog is the windows' state log (aggregator/window/log.go):
	// each checkpoint's changed states, appended, until a compaction
	// writes them to Badger under their keys and purges them; and the
	// rule filter's lateness watermarks (aggregator/filter/gatelog.go).
	StreamStateLog = "STATELOG"
)

// Bus is a connection to JetStream, and the embedded server when there is one.
type Bus struct {
	cfg    Config
	server *server.Server // nil when connected to an external URL
	nc     *nats.Conn
	js     jetstream.JetStream
	log    *slog.Logger

	mOnce sync.Once
	m     *metrics
	gate  Gate // nil: never held

	health     jsHealth      // see Watch
	watchEvery time.Duration // default 1s; tests shorten it
}

// Open starts the embedded server (unless cfg.URL is set), connects, and
// creates or updates the streams. cfg must have been validated.
func Open(ctx context.Context, cfg Config, dataDir string, logger *slog.Logger) (*Bus, error) {
	b := &Bus{cfg: cfg, log: logger.With("component", "bus")}
	var opts []nats.Option
	url := cfg.URL
	if url == "" {
		ns, self, err := startEmbedded(cfg, dataDir, b.log)
		if err != nil {
			return nil, err
		}
		b.server = ns
		// In-process: no socket and no TLS, whatever the port speaks.
		url = "nats://in-process"
		pub, err := self.PublicKey()
		if err != nil {
			b.shutdownServer()
			return nil, fmt.Errorf("reading outpost's nats key: %w", err)
		}
		opts = append(opts,
			nats.InProcessServer(ns),
			nats.Nkey(pub, self.Sign),
			nats.CustomInboxPrefix(internalInboxPrefix),
		)
	} else if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	opts = append(opts,
		nats.Name("outpost"),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				b.log.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { b.log.Info("reconnected to NATS") }),
	)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		b.shutdownServer()
		return nil, fmt.Errorf("connecting to NATS at %s: %w", url, err)
	}
	b.nc = nc
	js, err := jetstream.New(nc, b.publishOptions()...)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("opening JetStream: %w", err)
	}
	b.js = js
	if err := b.ensureStreams(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// startEmbedded starts the embedded server with the users of auth.go and
// returns it with the key Outpost's own connection signs in with.
func startEmbedded(cfg Config, dataDir string, log *slog.Logger) (*server.Server, nkeys.KeyPair, error) {
	users, self, created, err := serverUsers(cfg, dataDir)
	if err != nil {
		return nil, nil, err
	}
	opts := &server.Options{
		ServerName: "outpost",
		JetStream:  true,
		StoreDir:   filepath.Join(dataDir, "jetstream"),
		NoSigs:     true,
		DontListen: cfg.Listen == "",
		Nkeys:      users,
		// JetStream's own limits are the streams'; let them use the disk.
		JetStreamMaxStore: -1,
		SyncAlways:        cfg.syncAlways,
		SyncInterval:      cfg.syncEvery,
	}
	if cfg.Listen != "" {
		host, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, nil, fmt.Errorf("nats.listen %q: %w", cfg.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, nil, fmt.Errorf("nats.listen %q: bad port: %w", cfg.Listen, err)
		}
		if p == 0 { // as for net.Listen: any free port (the server's own 0 means 4222)
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, p
		if t := cfg.TLS; t.enabled() {
			tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
				CertFile: t.CertFile, KeyFile: t.KeyFile, CaFile: t.ClientCAFile, Verify: t.ClientCAFile != "",
			})
			if err != nil {
				return nil, nil, fmt.Errorf("nats.tls: %w", err)
			}
			opts.TLSConfig, opts.TLS, opts.TLSVerify = tc, true, t.ClientCAFile != ""
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("configuring embedded NATS: %w", err)
	}
	ns.SetLoggerV2(serverLogger{log}, false, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, nil, errors.New("embedded NATS did not become ready within 30s (is the data dir writable? is nats.listen free?)")
	}
	if created {
		log.Info("generated the read-only NATS key for nats.listen", "file", ReaderKeyFile(dataDir))
	}
	return ns, self, nil
}

func (b *Bus) ensureStreams(ctx context.Context) error {
	s := b.cfg.Streams
	streams := []jetstream.StreamConfig{
		{
			Name: StreamEvents, Subjects: []string{"events.>"},
			Description: "normalized events from the sources",
			Retention:   jetstream.WorkQueuePolicy, Discard: jetstream.DiscardNew,
			MaxBytes: int64(s.Events.MaxBytes), MaxAge: s.Events.MaxAge,
		},
		{
			Name: StreamMatches, Subjects: []string{"matches.>"},
			Description: "single-event rule matches, partitioned by hash(rule, key)",
			Retention:   jetstream.WorkQueuePolicy, Discard: jetstream.DiscardNew,
			MaxBytes: int64(s.Matches.MaxBytes), MaxAge: s.Matches.MaxAge,
		},
		{
			Name: StreamAlerts, Subjects: []string{"alerts.>"},
			Description: "derived alerts waiting for or already sent to the SIEM",
			Retention:   jetstream.LimitsPolicy, Discard: jetstream.DiscardOld,
			MaxBytes: int64(s.Alerts.MaxBytes), MaxAge: s.Alerts.MaxAge,
			Duplicates: b.cfg.DuplicateWindow,
		},
		{
			Name: StreamDeadLetter, Subjects: []string{"deadletter.>"},
			Description: "input that could not be framed or parsed",
			Retention:   jetstream.LimitsPolicy, Discard: jetstream.DiscardOld,
			MaxBytes: int64(s.DeadLetter.MaxBytes), MaxAge: s.DeadLetter.MaxAge,
		},
		{
			// No limits: the windows stage purges what its compactions
			// cover (windows.state_log.size bounds the rest), and a
			// record lost to a limit would be state lost.
			Name: StreamStateLog, Subjects: []string{"statelog.>"},
			Description: "window states changed by each checkpoint, until compacted into Badger; the rule filter's lateness watermarks",
			Retention:   jetstream.LimitsPolicy, Discard: jetstream.DiscardNew,
		},
	}
	for _, sc := range streams {
		sc.Storage = jetstream.FileStorage
		sc.Replicas = b.cfg.Replicas
		if _, err := b.js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("creating or updating stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// JetStream returns the JetStream context for stages that need more than
// the helpers here.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// Conn returns the underlying NATS connection.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// Partitions is the number of MATCHES partitions.
func (b *Bus) Partitions() int { return b.cfg.Partitions }

// Close drains the connection and stops the embedded server, which flushes
// JetStream's store to disk.
func (b *Bus) Close() {
	if b.nc != nil {
		if err := b.nc.Drain(); err != nil {
			b.nc.Close()
		}
		// Drain is asynchronous; wait for it so acks in flight reach the server.
		deadline := time.Now().Add(5 * time.Second)
		for !b.nc.IsClosed() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		b.nc.Close()
	}
	b.shutdownServer()
}

func (b *Bus) shutdownServer() {
	if b.server != nil {
		b.server.Shutdown()
		b.server.WaitForShutdown()
		b.server = nil
	}
}

// serverLogger routes the embedded server's log lines into slog. Notices
// are debug: the server is an implementation detail on the happy path.
type serverLogger struct{ log *slog.Logger }

func (l serverLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l serverLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l serverLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLogger) Debugf(format string, v ...any)  {}
func (l serverLogger) Tracef(format string, v ...any)  {}

// DeadLetter publishes data that a stage could not process to
// deadletter.<source> and waits for the ack. The reason and the sender go
// in headers. Each stored dead letter is counted in
// outpost_dead_letters_total{stage, reason}.
func (b *Bus) DeadLetter(ctx context.Context, source, reason string, data []byte, sender string) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.PublishTimeout)
	defer cancel()
	ack, err := b.js.PublishMsg(ctx, deadLetterMsg(source, reason, data, sender))
	if err != nil {
		b.countPublishError("deadletter."+source, err)
		return err
	}
	b.countDeadLetter(ack.Stream, source, reason)
	return nil
}

func (b *Bus) countDeadLetter(stream, source, reason string) {
	m := b.metrics()
	m.published.WithLabelValues(stream).Inc()
	m.deadLetters.WithLabelValues(deadLetterLabels(source, reason)).Inc()
}

func deadLetterMsg(source, reason string, data []byte, sender string) *nats.Msg {
	m := nats.NewMsg("deadletter." + source)
	m.Header.Set("Outpost-Reason", reason)
	if sender != "" {
		m.Header.Set("Outpost-Sender", sender)
	}
	m.Header.Set("Outpost-Received", time.Now().UTC().Format(time.RFC3339Nano))
	m.Data = data
	return m
}

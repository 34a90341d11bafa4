package bus

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// openListeningBus opens a bus whose embedded server also listens on a
// loopback port, as `nats.listen` asks.
func openListeningBus(t *testing.T, dataDir string) *Bus {
	t.Helper()
	return openBusWith(t, Config{Listen: "127.0.0.1:0"}, dataDir)
}

// openBusWith validates cfg and opens a bus on dataDir, closed when t ends.
func openBusWith(t *testing.T, cfg Config, dataDir string) *Bus {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := Open(context.Background(), cfg, dataDir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// clientAddr is the host:port the embedded server accepts clients on.
func clientAddr(t *testing.T, b *Bus) string {
	t.Helper()
	addr, ok := b.server.Addr().(*net.TCPAddr)
	if !ok {
		t.Fatalf("embedded server is not listening: %v", b.server.Addr())
	}
	return addr.String()
}

// dialRaw opens a plain TCP connection to b's client port, with a 5 s
// deadline, closed when t ends.
func dialRaw(t *testing.T, b *Bus) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", clientAddr(t, b), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	return conn, bufio.NewReader(conn)
}

// streamMsgs is the number of messages in a stream.
func streamMsgs(t *testing.T, b *Bus, name string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := b.JetStream().Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// The forged-alert reproduction: a raw client on the client port, without
// credentials, publishes to alerts.critical. The server must refuse it and
// nothing may reach ALERTS (whose consumer would send it to the SIEM).
func TestListenRejectsAnonymousPublish(t *testing.T) {
	b := openListeningBus(t, t.TempDir())
	conn, r := dialRaw(t, b)
	info, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(info, "INFO ") {
		t.Fatalf("want the server's INFO, got %q, %v", info, err)
	}
	if _, err := io.WriteString(conn, "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPUB alerts.critical 5\r\nhello\r\nPING\r\n"); err != nil {
		t.Fatal(err)
	}
	var replies []string
	for {
		line, err := r.ReadString('\n')
		if line != "" {
			replies = append(replies, strings.TrimSpace(line))
		}
		if err != nil || strings.HasPrefix(line, "PONG") {
			break
		}
	}
	if len(replies) == 0 || !strings.Contains(replies[0], "Authorization Violation") {
		t.Errorf("server replied %q, want -ERR 'Authorization Violation'", replies)
	}
	// Whatever the server did with the connection, the stream must be empty.
	// A PONG would have come after the PUB was processed; give a stored
	// message a moment to show anyway.
	time.Sleep(100 * time.Millisecond)
	if n := streamMsgs(t, b, StreamAlerts); n != 0 {
		t.Errorf("ALERTS holds %d messages after an anonymous PUB, want 0", n)
	}
}

// readerConn connects over TCP with the generated reader key, the way
// `nats --nkey <data_dir>/nats/reader.nk` does, and collects the async
// errors (permission violations) the server sends.
func readerConn(t *testing.T, b *Bus, dataDir string, extra ...nats.Option) (*nats.Conn, <-chan error) {
	t.Helper()
	nkey, err := nats.NkeyOptionFromSeed(ReaderKeyFile(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 64)
	opts := append([]nats.Option{nkey, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errc <- err:
		default:
		}
	})}, extra...)
	nc, err := nats.Connect("nats://"+clientAddr(t, b), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, errc
}

// The reader can look at everything and change nothing: stream and
// consumer info, stored messages and the live subjects work; publishing to
// Outpost's subjects, acking or fetching for Outpost's consumers, and
// changing streams or consumers are refused and leave the store as it was.
func TestReaderIsReadOnly(t *testing.T) {
	dir := t.TempDir()
	b := openListeningBus(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if st, err := os.Stat(ReaderKeyFile(dir)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("reader key file: %v, %v; want mode 0600", st, err)
	}
	// Outpost's own alert, and a consumer like the forwarder's.
	if _, err := b.JetStream().Publish(ctx, "alerts.high", []byte(`{"id":"a1"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.JetStream().CreateOrUpdateConsumer(ctx, StreamAlerts, jetstream.ConsumerConfig{
		Durable: "outpost-forwarder-siem", AckPolicy: jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatal(err)
	}

	nc, errc := readerConn(t, b, dir)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// Reads.
	names := js.StreamNames(ctx)
	var got []string
	for n := range names.Name() {
		got = append(got, n)
	}
	if names.Err() != nil || len(got) != 5 {
		t.Errorf("stream names %v, %v; want the 5 streams", got, names.Err())
	}
	s, err := js.Stream(ctx, StreamAlerts)
	if err != nil {
		t.Fatalf("stream info as the reader: %v", err)
	}
	if m, err := s.GetMsg(ctx, 1); err != nil || string(m.Data) != `{"id":"a1"}` {
		t.Errorf("getting alert 1 as the reader: %v, %v", m, err)
	}
	if _, err := s.Consumer(ctx, "outpost-forwarder-siem"); err != nil {
		t.Errorf("consumer info as the reader: %v", err)
	}
	live, err := nc.SubscribeSync("alerts.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.JetStream().Publish(ctx, "alerts.low", []byte(`{"id":"a2"}`)); err != nil {
		t.Fatal(err)
	}
	if m, err := live.NextMsg(5 * time.Second); err != nil || string(m.Data) != `{"id":"a2"}` {
		t.Errorf("live alert as the reader: %v, %v", m, err)
	}
	drain(errc)

	// Writes: each must come back as a permissions violation.
	for _, subj := range []string{
		"alerts.critical", "events.syslog", "matches.3", "deadletter.syslog",
		"$JS.API.STREAM.PURGE.ALERTS",
		"$JS.API.STREAM.DELETE.ALERTS",
		"$JS.API.STREAM.UPDATE.ALERTS",
		"$JS.API.STREAM.CREATE.MINE",
		"$JS.API.STREAM.MSG.DELETE.ALERTS",
		"$JS.API.STREAM.SNAPSHOT.ALERTS",
		"$JS.API.CONSUMER.CREATE.ALERTS",
		"$JS.API.CONSUMER.CREATE.ALERTS.outpost-forwarder-siem.alerts.>",
		"$JS.API.CONSUMER.DURABLE.CREATE.ALERTS.outpost-forwarder-siem",
		"$JS.API.CONSUMER.DELETE.ALERTS.outpost-forwarder-siem",
		"$JS.API.CONSUMER.MSG.NEXT.ALERTS.outpost-forwarder-siem",
		"$JS.ACK.ALERTS.outpost-forwarder-siem.1.1.1.0.0",
	} {
		t.Run(subj, func(t *testing.T) {
			if err := nc.Publish(subj, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			_ = nc.Flush()
			select {
			case err := <-errc:
				if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), subj) {
					t.Errorf("publish to %s: %v, want a permissions violation", subj, err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("publish to %s was not refused", subj)
			}
		})
	}
	// Outpost's replies are not the reader's to see.
	if _, err := nc.SubscribeSync(internalInboxPrefix + ".>"); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	select {
	case err := <-errc:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Errorf("subscribing to Outpost's inbox: %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("subscribing to Outpost's inbox was not refused")
	}
	if n := streamMsgs(t, b, StreamAlerts); n != 2 {
		t.Errorf("ALERTS holds %d messages, want Outpost's 2", n)
	}
	ci, err := b.JetStream().Consumer(ctx, StreamAlerts, "outpost-forwarder-siem")
	if err != nil {
		t.Fatalf("the forwarder's consumer after the reader: %v", err)
	}
	if info := ci.CachedInfo(); info.AckFloor.Stream != 0 || info.NumAckPending != 0 || info.Delivered.Stream != 0 {
		t.Errorf("the reader moved the forwarder's consumer: %+v", info)
	}
}

func drain(errc <-chan error) {
	for {
		select {
		case <-errc:
		default:
			return
		}
	}
}

// With listen set, Outpost's own in-process connection still publishes
// and consumes: the internal user has every permission.
func TestListenPipelineStillWorks(t *testing.T) {
	b := openListeningBus(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	evs := []*event.Event{{ID: "e1", Source: "syslog"}, {ID: "e2", Source: "syslog"}}
	if err := b.PublishEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if err := b.DeadLetter(ctx, "syslog", "test", []byte("junk"), "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	var ids []string
	cctx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		errc <- b.Consume(cctx, ConsumerConfig{Stream: StreamEvents, Durable: "outpost-filter"}, slog.New(slog.NewTextHandler(io.Discard, nil)),
			func(_ context.Context, msgs []jetstream.Msg) error {
				for _, m := range msgs {
					if err := DecodeEvents(m.Data(), func(ev *event.Event) error { ids = append(ids, ev.ID); return nil }, nil); err != nil {
						return err
					}
				}
				if len(ids) >= len(evs) {
					stop()
				}
				return nil
			})
	}()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("consuming timed out")
	}
	if !slices.Equal(ids, []string{"e1", "e2"}) {
		t.Errorf("consumed %v, want e1 e2", ids)
	}
	if n := streamMsgs(t, b, StreamDeadLetter); n != 1 {
		t.Errorf("DEADLETTER holds %d, want 1", n)
	}
}

// The port is never opened without the reader's key: if it cannot be
// created or is not private, Open fails. A kept key is reused.
func TestListenCredentials(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := Config{Listen: "127.0.0.1:0"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	t.Run("unwritable", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "nats"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if b, err := Open(context.Background(), cfg, dir, logger); err == nil {
			b.Close()
			t.Fatal("opened the port without a reader key")
		}
	})
	t.Run("readable by others", func(t *testing.T) {
		dir := t.TempDir()
		b := openListeningBus(t, dir)
		b.Close()
		if err := os.Chmod(ReaderKeyFile(dir), 0o644); err != nil {
			t.Fatal(err)
		}
		if b, err := Open(context.Background(), cfg, dir, logger); err == nil || !strings.Contains(err.Error(), "readable by others") {
			if b != nil {
				b.Close()
			}
			t.Fatalf("opened with a world-readable key: %v", err)
		}
	})
	t.Run("kept", func(t *testing.T) {
		dir := t.TempDir()
		b := openListeningBus(t, dir)
		before, err := os.ReadFile(ReaderKeyFile(dir))
		if err != nil {
			t.Fatal(err)
		}
		b.Close()
		b = openListeningBus(t, dir)
		after, err := os.ReadFile(ReaderKeyFile(dir))
		if err != nil || string(after) != string(before) {
			t.Fatalf("key changed across restarts: %v", err)
		}
		nc, _ := readerConn(t, b, dir)
		if _, err := nc.Request("$JS.API.INFO", nil, 5*time.Second); err != nil {
			t.Errorf("reader after a restart: %v", err)
		}
	})
}

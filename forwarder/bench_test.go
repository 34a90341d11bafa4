package forwarder

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkForward measures delivery from ALERTS to a receiver on
// 127.0.0.1: consume, decode, suppression lookup, CEF, syslog frame,
// write, record the sent ids in Badger, ack. The alerts are published
// before the timer starts. Run with a fixed count, e.g. -benchtime=20000x.
func BenchmarkForward(b *testing.B) {
	cases := []struct {
		name string
		dest func(addr string) Destination
		relp bool
	}{
		{"tcp-lf", func(a string) Destination { return Destination{Address: a} }, false},
		{"tcp-octet", func(a string) Destination { return Destination{Address: a, Framing: FramingOctetCounting} }, false},
		{"relp", func(a string) Destination { return Destination{Address: a, Transport: TransportRELP} }, true},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			h := newHarness(b)
			var count func() int
			var addr string
			if c.relp {
				s := listenRELP(b, "127.0.0.1:0")
				count, addr = s.count, s.addr()
			} else {
				r := listenStream(b, "127.0.0.1:0", nil)
				count, addr = r.count, r.addr()
			}
			js := h.bus.JetStream()
			alerts := testAlerts(b.N)
			size := 0
			for _, a := range alerts {
				data, _ := json.Marshal(a)
				m := nats.NewMsg("alerts.high")
				m.Header.Set(jetstream.MsgIDHeader, a.ID)
				m.Data = data
				if _, err := js.PublishMsgAsync(m); err != nil {
					b.Fatal(err)
				}
			}
			<-js.PublishAsyncComplete()
			cfg := Config{Hostname: "outpost-bench", Destinations: []Destination{c.dest(addr)}}
			if err := cfg.Validate(); err != nil {
				b.Fatal(err)
			}
			f, err := New(cfg, "bench", h.bus, h.db, testLogger(), prometheus.NewRegistry())
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- f.Run(ctx) }()
			deadline := time.Now().Add(5 * time.Minute)
			for count() < b.N && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			size = int(f.SentBytes())
			cancel()
			<-done
			if count() < b.N {
				b.Fatalf("only %d of %d delivered", count(), b.N)
			}
			b.SetBytes(int64(size / b.N))
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "alerts/s")
		})
	}
}

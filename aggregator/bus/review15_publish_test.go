package bus

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Compressed batches that fail (JetStream stopped mid-stream, as at a full
// disk) are sent again as they are, from pooled buffers freed only once
// acked: every event arrives as it was sent, none lost, and every message
// of the stream reads (a batch freed and reused while still to be sent
// again would arrive holding another batch's bytes, or not decompress).
// Run with -race.
func TestReview15RetriedCompressedBatchesArriveWhole(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts JetStream")
	}
	b := openTestBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, done := runPublisher(ctx, t, b, PublisherConfig{Capacity: 512, Batch: 256})
	const n = 6000
	pad := strings.Repeat("sshd failed password ", 8)
	publishNumbered(ctx, t, p, done, n, pad, func(i int) {
		if i == n/3 {
			restartJetStream(t, b, 700*time.Millisecond)
		}
	})
	if testutil.ToFloat64(p.retries) == 0 {
		t.Error("no publish was retried: the outage missed the publishes")
	}
	var msgs, compressed int
	seen := readNumbered(ctx, t, b, n, pad, func(m *jetstream.RawStreamMsg) {
		msgs++
		if m.Data[0] == batchS2 {
			compressed++
		}
	})
	if compressed == 0 {
		t.Error("no message was compressed")
	}
	for i, c := range seen {
		if c == 0 {
			t.Fatalf("event %d missing", i)
		}
	}
	t.Logf("%d messages, %d compressed, %v retries", msgs, compressed, testutil.ToFloat64(p.retries))
}

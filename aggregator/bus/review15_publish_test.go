package bus

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-siem/outpost/aggregator/event"
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
	for i := range n {
		if i == n/3 {
			restartJetStream(t, b, 700*time.Millisecond)
		}
		ev := &event.Event{ID: fmt.Sprintf("e%06d", i), Source: "syslog", Message: fmt.Sprintf("%06d %s", i, pad), Time: time.Unix(int64(i), 0), Received: time.Unix(int64(i), 0)}
		if err := p.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if testutil.ToFloat64(p.retries) == 0 {
		t.Error("no publish was retried: the outage missed the publishes")
	}
	s, err := b.JetStream().Stream(ctx, StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := make([]int, n)
	compressed := 0
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Data[0] == batchS2 {
			compressed++
		}
		err = DecodeEvents(m.Data, func(ev *event.Event) error {
			var i int
			if _, err := fmt.Sscanf(ev.ID, "e%06d", &i); err != nil || i < 0 || i >= n {
				return fmt.Errorf("event id %q", ev.ID)
			}
			if want := fmt.Sprintf("%06d %s", i, pad); ev.Message != want || "events."+ev.Source != m.Subject {
				return fmt.Errorf("event %s holds %.20q under %s", ev.ID, ev.Message, m.Subject)
			}
			seen[i]++
			return nil
		}, func(rec []byte, err error) error { return err })
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
	}
	if compressed == 0 {
		t.Error("no message was compressed")
	}
	for i, c := range seen {
		if c == 0 {
			t.Fatalf("event %d missing", i)
		}
	}
	t.Logf("%d messages, %d compressed, %v retries", info.State.Msgs, compressed, testutil.ToFloat64(p.retries))
}

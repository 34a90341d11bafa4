package filter

import (
	"hash/fnv"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

func TestLatenessIsPerHost(t *testing.T) {
	s := &Stage{lateness: func(string) time.Duration { return 2 * time.Minute }, newest: map[watermarkKey]time.Time{}}
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	ev := func(host string, at time.Time) *event.Event {
		return &event.Event{Source: "syslog", Host: host, Time: at, Received: now}
	}
	// A host whose clock runs an hour ahead (or logs local time east of UTC).
	if s.isLate(ev("fast", now.Add(time.Hour))) {
		t.Fatal("first event late")
	}
	// Other hosts are judged against their own watermark.
	for i := range 100 {
		if s.isLate(ev("good", now.Add(time.Duration(i)*time.Second))) {
			t.Fatalf("event %d of a correct host judged late", i)
		}
	}
	// The good host's watermark is now+99s.
	if !s.isLate(ev("good", now.Add(-10*time.Minute))) {
		t.Error("an event 10 minutes behind its host was not late")
	}
	if s.isLate(ev("good", now.Add(time.Minute))) {
		t.Error("an event within the allowed lateness was late")
	}
}

func TestSeenTimeIsAtMostTheReception(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	if got := (&event.Event{Time: now.AddDate(73, 0, 0), Received: now}).SeenTime(); !got.Equal(now) {
		t.Errorf("seen = %v", got)
	}
	if got := (&event.Event{Time: now.Add(-time.Hour), Received: now}).SeenTime(); !got.Equal(now.Add(-time.Hour)) {
		t.Errorf("seen = %v", got)
	}
	if got := (&event.Event{Time: now.Add(4*time.Minute + 50*time.Second), Received: now}).SeenTime(); !got.Equal(now) {
		t.Errorf("seen = %v, want the reception time", got)
	}
	if got := (&event.Event{Time: now}).SeenTime(); !got.Equal(now) {
		t.Errorf("without a reception time: seen = %v", got)
	}
}

// partition is FNV-1a over rule, 0, key, as hash/fnv computes it.
func TestPartitionIsFNV1a(t *testing.T) {
	for _, c := range []struct{ rule, key string }{{"ssh-brute-force", "src_ip=203.0.113.5"}, {"", ""}, {"r", "k=é"}} {
		h := fnv.New32a()
		h.Write([]byte(c.rule))
		h.Write([]byte{0})
		h.Write([]byte(c.key))
		if got, want := partition(c.rule, c.key, 16), h.Sum32()%16; got != want {
			t.Errorf("partition(%q, %q) = %d, want %d", c.rule, c.key, got, want)
		}
	}
}

// One datagram claiming a host, stamped 4m50s ahead (inside the 5 minutes
// of skew once tolerated), must not make that host's genuine events late:
// the watermark follows reception time, not what a sender claims.
func TestFutureStampCannotMakeOthersLate(t *testing.T) {
	s := &Stage{lateness: func(string) time.Duration { return 2 * time.Minute }, newest: map[watermarkKey]time.Time{}}
	now := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	forged := &event.Event{Source: "syslog", Host: "victim01", Sender: "127.0.0.66:5140", Time: now.Add(4*time.Minute + 50*time.Second), Received: now}
	if s.isLate(forged) {
		t.Fatal("the forged event itself was judged late")
	}
	late := 0
	for i := range 20 {
		at := now.Add(time.Duration(i) * time.Second)
		if s.isLate(&event.Event{Source: "syslog", Host: "victim01", Sender: "127.0.0.10:514", Time: at, Received: at}) {
			late++
		}
	}
	if late > 0 {
		t.Errorf("%d of 20 genuine events judged late after one future-stamped datagram", late)
	}
	if w, last := s.newest[watermarkKey{"syslog", "victim01"}], now.Add(19*time.Second); w.After(last) {
		t.Errorf("watermark %s ahead of the last reception %s", w.Format(time.RFC3339), last.Format(time.RFC3339))
	}
	// A future-stamped event is judged by its reception: received 5m
	// behind the host's watermark, it is late whatever it claims.
	stale := &event.Event{Source: "syslog", Host: "victim01", Time: now.AddDate(73, 0, 0), Received: now.Add(19*time.Second - 5*time.Minute)}
	if !s.isLate(stale) {
		t.Error("an event received 5m behind its host's watermark, stamped 2099, was not late")
	}
}

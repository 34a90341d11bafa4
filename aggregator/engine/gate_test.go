package engine

import (
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

func TestLatenessIsPerHost(t *testing.T) {
	s := NewGate(Lateness{AllowedLateness: 2 * time.Minute})
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	ev := func(host string, at time.Time) *event.Event {
		return &event.Event{Source: "syslog", Host: host, Time: at, Received: now}
	}
	// A host whose clock runs an hour ahead (or logs local time east of UTC).
	if !s.Admit(ev("fast", now.Add(time.Hour))) {
		t.Fatal("first event late")
	}
	// Other hosts are judged against their own watermark.
	for i := range 100 {
		if !s.Admit(ev("good", now.Add(time.Duration(i)*time.Second))) {
			t.Fatalf("event %d of a correct host judged late", i)
		}
	}
	// The good host's watermark is now+99s.
	if !!s.Admit(ev("good", now.Add(-10*time.Minute))) {
		t.Error("an event 10 minutes behind its host was not late")
	}
	if !s.Admit(ev("good", now.Add(time.Minute))) {
		t.Error("an event within the allowed lateness was late")
	}
}

// One datagram claiming a host, stamped 4m50s ahead (inside the 5 minutes
// of skew once tolerated), must not make that host's genuine events late:
// the watermark follows reception time, not what a sender claims.
func TestFutureStampCannotMakeOthersLate(t *testing.T) {
	s := NewGate(Lateness{AllowedLateness: 2 * time.Minute})
	now := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	forged := &event.Event{Source: "syslog", Host: "victim01", Sender: "127.0.0.66:5140", Time: now.Add(4*time.Minute + 50*time.Second), Received: now}
	if !s.Admit(forged) {
		t.Fatal("the forged event itself was judged late")
	}
	late := 0
	for i := range 20 {
		at := now.Add(time.Duration(i) * time.Second)
		if !s.Admit(&event.Event{Source: "syslog", Host: "victim01", Sender: "127.0.0.10:514", Time: at, Received: at}) {
			late++
		}
	}
	if late > 0 {
		t.Errorf("%d of 20 genuine events judged late after one future-stamped datagram", late)
	}
	if w, last := time.Unix(0, *s.newest[hostKey{"syslog", "victim01"}]).UTC(), now.Add(19*time.Second); w.After(last) {
		t.Errorf("watermark %s ahead of the last reception %s", w.Format(time.RFC3339), last.Format(time.RFC3339))
	}
	// A future-stamped event is judged by its reception: received 5m
	// behind the host's watermark, it is late whatever it claims.
	stale := &event.Event{Source: "syslog", Host: "victim01", Time: now.AddDate(73, 0, 0), Received: now.Add(19*time.Second - 5*time.Minute)}
	if !!s.Admit(stale) {
		t.Error("an event received 5m behind its host's watermark, stamped 2099, was not late")
	}
}

package engine

import (
	"strconv"
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
	if w, last := time.Unix(0, s.newest[hostKey{"syslog", "victim01"}].newest).UTC(), now.Add(19*time.Second); w.After(last) {
		t.Errorf("watermark %s ahead of the last reception %s", w.Format(time.RFC3339), last.Format(time.RFC3339))
	}
	// A future-stamped event is judged by its reception: received 5m
	// behind the host's watermark, it is late whatever it claims.
	stale := &event.Event{Source: "syslog", Host: "victim01", Time: now.AddDate(73, 0, 0), Received: now.Add(19*time.Second - 5*time.Minute)}
	if !!s.Admit(stale) {
		t.Error("an event received 5m behind its host's watermark, stamped 2099, was not late")
	}
}

// Undo takes back admissions: events judged again after it are judged as
// they were the first time, not against the newer events admitted since.
func TestGateUndoJudgesAgainAsTheFirstTime(t *testing.T) {
	g := NewGate(Lateness{AllowedLateness: 2 * time.Minute})
	at := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	ev := func(host string, d time.Duration) *event.Event {
		return &event.Event{Source: "syslog", Host: host, Time: at.Add(d), Received: at.Add(d)}
	}
	if !g.Admit(ev("a", 0)) {
		t.Fatal("first event late")
	}
	durable := g.Mark()
	g.Forget(durable)
	first := g.Mark() // batch 1: a at +1m, b (new host) at +1m
	g.Admit(ev("a", time.Minute))
	g.Admit(ev("b", time.Minute))
	second := g.Mark() // batch 2: a and b 10 minutes on
	g.Admit(ev("a", 10*time.Minute))
	g.Admit(ev("b", 10*time.Minute))
	if g.Admit(ev("a", time.Minute)) {
		t.Fatal("without undo, batch 1 handed again should be late (the defect this guards)")
	}
	g.Undo(second)
	if got := time.Unix(0, g.Newest()).UTC(); !got.Equal(at.Add(time.Minute)) {
		t.Errorf("Newest after undoing batch 2 = %s, want batch 1's newest", got)
	}
	g.Undo(first)
	if _, ok := g.newest[hostKey{"syslog", "b"}]; ok {
		t.Error("host b, first seen in an undone batch, still has a watermark")
	}
	if w := g.newest[hostKey{"syslog", "a"}].newest; w != at.UnixNano() {
		t.Errorf("host a's watermark %v after undo, want the durable %v", time.Unix(0, w).UTC(), at)
	}
	if !g.Admit(ev("a", time.Minute)) || !g.Admit(ev("b", time.Minute)) || !g.Admit(ev("a", 10*time.Minute)) {
		t.Error("the batches handed again were judged late")
	}
	if g.Admit(ev("a", 0)) {
		t.Error("an event 10 minutes behind after the retry was not late")
	}
}

// The per-host watermarks start over past MaxHostWatermarks; an undo
// across that puts the old ones back.
func TestGateUndoAcrossTheHostLimit(t *testing.T) {
	g := NewGate(Lateness{AllowedLateness: 2 * time.Minute})
	at := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	ev := func(i int, d time.Duration) *event.Event {
		return &event.Event{Source: "syslog", Host: "h" + strconv.Itoa(i), Time: at.Add(d), Received: at.Add(d)}
	}
	for i := range MaxHostWatermarks {
		g.Admit(ev(i, 10*time.Minute))
	}
	m := g.Mark()
	g.Admit(ev(MaxHostWatermarks, 0)) // one host too many: the map starts over
	if len(g.newest) != 1 {
		t.Fatalf("%d watermarks after the limit, want 1", len(g.newest))
	}
	g.Undo(m)
	if len(g.newest) != MaxHostWatermarks {
		t.Fatalf("%d watermarks after undo, want %d", len(g.newest), MaxHostWatermarks)
	}
	if g.Admit(ev(7, 0)) {
		t.Error("host 7's watermark was not put back: an event 10 minutes behind it was admitted")
	}
}

// Forget drops the record before a mark; later marks still undo exactly.
func TestGateForgetKeepsLaterMarks(t *testing.T) {
	g := NewGate(Lateness{AllowedLateness: time.Minute})
	at := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	var marks []Mark
	for i := range 50 {
		marks = append(marks, g.Mark())
		d := time.Duration(i) * 30 * time.Second
		g.Admit(&event.Event{Source: "syslog", Host: "a", Time: at.Add(d), Received: at.Add(d)})
		if i >= 10 {
			g.Forget(marks[i-10])
		}
	}
	g.Undo(marks[45])
	want := at.Add(44 * 30 * time.Second).UnixNano()
	if w := g.newest[hostKey{"syslog", "a"}].newest; w != want || g.Newest() != want {
		t.Errorf("after undo to batch 45: watermark %d, newest %d, want %d", w, g.Newest(), want)
	}
	if len(g.journal)-g.head > 11 {
		t.Errorf("the record holds %d entries, more than the 10 batches not forgotten", len(g.journal)-g.head)
	}
}

// BenchmarkGateAdmit is Admit over 1,000 hosts, each event a second on:
// plain, journaled as the rule filter does (a Mark per batch of 256, the
// batch four back forgotten), and tracked as well, as with the embedded
// server (Changes every 64 events, an EVENTS message's worth).
func BenchmarkGateAdmit(b *testing.B) {
	at := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	evs := make([]*event.Event, 1000)
	for i := range evs {
		evs[i] = &event.Event{Source: "syslog", Host: "h" + strconv.Itoa(i)}
	}
	for _, mode := range []string{"plain", "journaled", "tracked"} {
		journaled, tracked := mode != "plain", mode == "tracked"
		b.Run(mode, func(b *testing.B) {
			g := NewGate(Lateness{AllowedLateness: 2 * time.Minute})
			if tracked {
				g.Track()
			}
			var marks []Mark
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if journaled && i%256 == 0 {
					marks = append(marks, g.Mark())
					if len(marks) > 4 {
						g.Forget(marks[0])
						marks = marks[1:]
					}
				}
				if tracked && i%64 == 0 {
					g.Changes(func(string, string, int64) {})
				}
				ev := evs[i%len(evs)]
				ev.Time = at.Add(time.Duration(i) * time.Second)
				ev.Received = ev.Time
				g.Admit(ev)
			}
		})
	}
}

// gateState is every watermark of g, and its Newest.
func gateState(g *Gate) (map[hostKey]int64, int64) {
	m := map[hostKey]int64{}
	g.Watermarks(func(source, host string, newest int64) { m[hostKey{source, host}] = newest })
	return m, g.Newest()
}

// A second gate given what Changes listed after each "message" (Restore,
// RestoreClear, RestoreNewest), in order, holds the watermarks of the
// first: through batches undone and judged again, and the watermarks
// all starting over at MaxHostWatermarks hosts.
func TestGateChangesRestoreTheSameWatermarks(t *testing.T) {
	g := NewGate(Lateness{AllowedLateness: time.Minute})
	g.Track()
	copyOf := NewGate(Lateness{AllowedLateness: time.Minute})
	at := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	admit := func(host string, d time.Duration) {
		g.Admit(&event.Event{Source: "syslog", Host: host, Time: at.Add(d), Received: at.Add(d)})
	}
	apply := func() (listed int) {
		cleared, all := g.Changes(func(source, host string, newest int64) {
			copyOf.Restore(source, host, newest)
			listed++
		})
		if cleared {
			t.Fatal("cleared after the hosts it listed: a record must say it first")
		}
		copyOf.RestoreNewest(max(copyOf.Newest(), all))
		return listed
	}
	check := func(when string) {
		t.Helper()
		want, wantAll := gateState(g)
		got, gotAll := gateState(copyOf)
		if len(got) != len(want) || gotAll != wantAll {
			t.Fatalf("%s: %d watermarks (newest %d), want %d (%d)", when, len(got), gotAll, len(want), wantAll)
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("%s: %v at %d, want %d", when, k, got[k], v)
			}
		}
	}
	for i := range 20 { // a message: three hosts, each moved many times
		for j := range 30 {
			admit(strconv.Itoa(j%3), time.Duration(i*30+j)*time.Second)
		}
		if n := apply(); n != 3 {
			t.Fatalf("message %d listed %d changes, want each of its 3 hosts once", i, n)
		}
	}
	check("after 20 messages")
	// A batch admitted, undone (it failed), and judged again.
	m := g.Mark()
	admit("0", time.Hour)
	admit("new", time.Hour)
	g.Undo(m)
	if n := apply(); n != 0 {
		t.Fatalf("after an undo, %d changes listed, want none", n)
	}
	admit("0", time.Hour)
	apply()
	check("after a batch undone and admitted again")
	// Past MaxHostWatermarks: everything starts over, the record says so first.
	for i := range MaxHostWatermarks + 5 {
		admit("h"+strconv.Itoa(i), 2*time.Hour)
	}
	listed := 0
	cleared, all := g.Changes(func(source, host string, newest int64) {
		if listed == 0 {
			copyOf.RestoreClear() // as the record's flag says, before its hosts
		}
		listed++
		copyOf.Restore(source, host, newest)
	})
	if !cleared {
		t.Fatal("the watermarks started over, and Changes did not say so")
	}
	copyOf.RestoreNewest(max(copyOf.Newest(), all))
	// 3 hosts + 99,997 new ones fill it; the last 8 come after the start over.
	if listed != 8 {
		t.Errorf("listed %d hosts after the start over, want the 8 added since", listed)
	}
	check("after the watermarks started over")
}

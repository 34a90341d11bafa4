package engine

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// A rule with at_most is judged when the key's window closes: it fires
// for from threshold to at_most events, never before the watermark passes
// the window, never for more, and a redelivery changes nothing.
func TestAtMostFiresWhenTheWindowCloses(t *testing.T) {
	r := loadRule(t, `
rules:
  - id: few
    title: T
    kind: threshold
    severity: 5
    window: 60s
    threshold: 2
    at_most: 3
    condition: 'true'
    group_by: [src_ip]
`)
	sec := func(s int) int64 { return t0.Add(time.Duration(s) * time.Second).UnixNano() }
	tests := []struct {
		name   string
		events []int // seconds
		want   int   // the count the alert reports, 0 for none
	}{
		{"one: below the threshold", []int{0}, 0},
		{"two", []int{0, 30}, 2},
		{"three, the last at the window's end", []int{0, 30, 60}, 3},
		{"four: over at_most", []int{0, 10, 20, 30}, 0},
		{"the third after the window is the next window's", []int{0, 30, 61}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := &State{}
			var alerts []*event.Alert
			for i, s := range tc.events {
				m := match(0, s, string(rune('a'+i)), "")
				a, v := Apply(r, st, m, 0)
				if a != nil {
					alerts = append(alerts, a)
				}
				if _, dv := Apply(r, st, m, 0); dv != Duplicate {
					t.Errorf("a redelivered match: %v, want Duplicate", dv)
				}
				st = roundTrip(t, st)
				if s <= 60 && v == Fired {
					t.Fatalf("fired at second %d, before the window closed", s)
				}
			}
			if a, _ := Expire(r, st, "k=v", sec(60)); a != nil {
				t.Fatal("fired with the watermark at the window's end")
			}
			if a, _ := Expire(r, st, "k=v", sec(200)); a != nil {
				alerts = append(alerts, a)
			}
			got := 0
			if len(alerts) > 0 {
				got = alerts[0].Count
			}
			if got != tc.want || len(alerts) > 1 {
				t.Fatalf("alerts %+v, want one with count %d", alerts, tc.want)
			}
			if got > 0 {
				a := alerts[0]
				if !a.FirstSeen.Equal(t0) || len(a.EventIDs) != got || a.EventIDs[0] != "a" {
					t.Errorf("alert %+v", a)
				}
			}
			// The window is spent: its events again change nothing.
			if _, v := Apply(r, st, match(0, 0, "a", ""), 0); v != Duplicate {
				t.Errorf("an event of the judged window: %v, want Duplicate", v)
			}
		})
	}
}

// For distinct, at_most bounds the values; the state keeps at most
// at_most+1 of them however many events come.
func TestAtMostDistinctIsBounded(t *testing.T) {
	r := loadRule(t, `
rules:
  - id: fewvals
    title: T
    kind: distinct
    severity: 5
    window: 5m
    field: user
    at_most: 2
    condition: 'true'
    group_by: [src_ip]
`)
	st := &State{}
	for i := range 1000 {
		Apply(r, st, match(0, i%200, "e"+string(rune(i)), []string{"root", "admin", "pi"}[i%3]), 0)
	}
	if len(st.Times) > 3 {
		t.Errorf("the state holds %d values, want at most 3", len(st.Times))
	}
	if a, _ := Expire(r, st, "k=v", t0.Add(time.Hour).UnixNano()); a != nil {
		t.Errorf("three values fired a rule of at most two: %+v", a)
	}
	st = &State{}
	for i, u := range []string{"root", "root", "admin"} {
		Apply(r, st, match(0, i, "x"+u+string(rune('0'+i)), u), 0)
	}
	a, _ := Expire(r, st, "k=v", t0.Add(time.Hour).UnixNano())
	if a == nil || a.Count != 2 || !slices.Equal(a.Values, []string{"root", "admin"}) {
		t.Errorf("alert %+v, want the two values", a)
	}
}

// A closing window waits for the lateness: an event of the window that
// arrives after a later one, within the lateness, still counts; the later
// event opens the next window (found by review: the window was judged at
// the first event past its close, and the late one dropped).
func TestAtMostWaitsForLateEvents(t *testing.T) {
	r := loadRule(t, `
rules:
  - id: few
    title: T
    kind: threshold
    severity: 5
    window: 60s
    threshold: 2
    at_most: 2
    condition: 'true'
    group_by: [src_ip]
`)
	sec := func(s int) int64 { return t0.Add(time.Duration(s) * time.Second).UnixNano() }
	run := func(order []int) []*event.Alert {
		st := &State{}
		var alerts []*event.Alert
		for _, s := range order {
			if a, _ := Apply(r, st, match(0, s, "e"+strconv.Itoa(s), ""), 2*time.Minute); a != nil {
				alerts = append(alerts, a)
			}
			st = roundTrip(t, st)
		}
		// The watermark passes the first window, then the second.
		for _, wm := range []int{61, 200, 400} {
			if a, _ := Expire(r, st, "k=v", sec(wm)); a != nil {
				alerts = append(alerts, a)
			}
		}
		return alerts
	}
	if got := run([]int{0, 30, 59, 65}); len(got) != 0 {
		t.Errorf("three events in the window, in order: %d alerts", len(got))
	}
	if got := run([]int{0, 30, 65, 59}); len(got) != 0 {
		t.Errorf("three events in the window, one 6 s late: %d alerts, want none", len(got))
	}
	got := run([]int{0, 30, 65, 70})
	if len(got) != 2 || got[0].Count != 2 || !got[0].FirstSeen.Equal(t0) || got[1].Count != 2 || !got[1].FirstSeen.Equal(t0.Add(65*time.Second)) {
		t.Fatalf("two in the first window and two in the next, each its alert: %+v", got)
	}
	if got[0].ID == got[1].ID {
		t.Error("the two windows' alerts share an id")
	}
}

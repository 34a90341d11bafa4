package engine

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/event"
)

func match(step int, sec int, id, value string) *event.Match {
	return &event.Match{Key: "k=v", Time: t0.Add(time.Duration(sec) * time.Second), EventID: id, Step: step, Value: value}
}

// roundTrip stores and loads the state as the Badger store does across a
// restart: through the binary codec.
func roundTrip(t *testing.T, st *State) *State {
	t.Helper()
	var out State
	if err := DecodeState(AppendState(nil, st), &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func TestSequenceAcrossRestart(t *testing.T) {
	r := loadRule(t, failThenOK)
	st := &State{}
	for i, sec := range []int{0, 10, 20} {
		if a, _ := Apply(r, st, match(0, sec, "f"+string(rune('0'+i)), ""), 0); a != nil {
			t.Fatal("fired before the last step")
		}
		st = roundTrip(t, st)
	}
	// A redelivered failure after the restart is not counted twice.
	if _, v := Apply(r, st, match(0, 20, "f2", ""), 0); v != Duplicate {
		t.Errorf("redelivery verdict = %v, want Duplicate", v)
	}
	a, v := Apply(r, st, match(1, 60, "s", ""), 0)
	if v != Fired || a == nil {
		t.Fatalf("verdict %v, no alert", v)
	}
	if a.Count != 4 || len(a.Steps) != 4 || a.Steps[0].Name != "fail" || a.Steps[3].Name != "ok" || a.Steps[3].EventID != "s" {
		t.Errorf("alert %+v", a)
	}
}

func TestSequenceOrderAndWindow(t *testing.T) {
	r := loadRule(t, `
rules:
  - id: seq
    title: T
    kind: sequence
    severity: 9
    window: 60s
    steps:
      - {name: a, condition: 'action == "a"', by: [src_ip]}
      - {name: b, condition: 'action == "b"', by: [src_ip]}
`)
	tests := []struct {
		name   string
		ms     []*event.Match
		alerts int
	}{
		{"in order", []*event.Match{match(0, 0, "a", ""), match(1, 30, "b", "")}, 1},
		{"b before a", []*event.Match{match(1, 0, "b", ""), match(0, 30, "a", "")}, 0},
		{"a arrives late, still in order in event time", []*event.Match{match(1, 30, "b", ""), match(0, 0, "a", "")}, 1},
		{"too far apart", []*event.Match{match(0, 0, "a", ""), match(1, 61, "b", "")}, 0},
		{"exactly the window", []*event.Match{match(0, 0, "a", ""), match(1, 60, "b", "")}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, n := &State{}, 0
			for _, m := range tt.ms {
				if a, _ := Apply(r, st, m, 0); a != nil {
					n++
				}
			}
			if n != tt.alerts {
				t.Errorf("alerts = %d, want %d", n, tt.alerts)
			}
		})
	}
	ru := loadRule(t, `
rules:
  - id: useq
    title: T
    kind: sequence
    unordered: true
    severity: 9
    window: 60s
    steps:
      - {name: a, condition: 'action == "a"', by: [src_ip]}
      - {name: b, condition: 'action == "b"', by: [src_ip]}
`)
	st := &State{}
	Apply(ru, st, match(1, 0, "b", ""), 0)
	if a, _ := Apply(ru, st, match(0, 30, "a", ""), 0); a == nil {
		t.Error("unordered: b then a did not fire")
	}
}

func TestDistinctExactlyN(t *testing.T) {
	r := loadRule(t, `
rules:
  - {id: d, title: T, kind: distinct, severity: 5, condition: "true", group_by: [src_ip], field: user, threshold: 3, window: 60s}
`)
	st := &State{}
	for i, u := range []string{"a", "b", "a", "b", "a"} {
		if a, _ := Apply(r, st, match(0, i, "e"+u+string(rune('0'+i)), u), 0); a != nil {
			t.Fatalf("fired with 2 distinct values")
		}
	}
	a, _ := Apply(r, st, match(0, 10, "ec", "c"), 0)
	if a == nil || a.Count != 3 || len(a.Values) != 3 {
		t.Fatalf("third distinct value: alert %+v", a)
	}
}

func TestAbsenceNeverEarly(t *testing.T) {
	r := loadRule(t, `
rules:
  - {id: quiet, title: T, kind: absence, severity: 5, condition: "true", group_by: [host], for: 10m}
`)
	st := &State{}
	Apply(r, st, match(0, 0, "e1", ""), 0)
	Apply(r, st, match(0, 60, "e2", ""), 0)
	deadline := t0.Add(11 * time.Minute).UnixNano()
	if a, _ := Expire(r, st, "k=v", deadline); a != nil {
		t.Fatal("fired at the deadline, before the watermark passed it")
	}
	a, v := Expire(r, st, "k=v", deadline+1)
	if a == nil || v != Fired || !a.FirstSeen.Equal(t0.Add(time.Minute)) {
		t.Fatalf("after the deadline: %v %+v", v, a)
	}
	if a, _ := Expire(r, st, "k=v", deadline+2); a != nil {
		t.Error("fired twice for one silence")
	}

	// With expect: the expected event within `for` disarms the deadline.
	re := loadRule(t, `
rules:
  - {id: ack, title: T, kind: absence, severity: 5, condition: 'action == "start"', expect: 'action == "done"', group_by: [host], for: 5m}
`)
	st = &State{}
	Apply(re, st, match(0, 0, "s", ""), 0)
	Apply(re, st, match(1, 120, "d", ""), 0)
	if a, _ := Expire(re, st, "k=v", t0.Add(time.Hour).UnixNano()); a != nil {
		t.Error("fired although the expected event came in time")
	}
	st = &State{}
	Apply(re, st, match(0, 0, "s", ""), 0)
	// Too late: the deadline passed unmet, which the late event itself
	// proves (it reports the alert), or else the watermark does.
	a, _ = Apply(re, st, match(1, 400, "d", ""), 0)
	if late, _ := Expire(re, st, "k=v", t0.Add(time.Hour).UnixNano()); (a == nil) == (late == nil) {
		t.Error("did not fire once although the expected event came after `for`")
	}
}

func TestNewValueLearning(t *testing.T) {
	r := loadRule(t, `
rules:
  - {id: nv, title: T, kind: new_value, severity: 5, condition: "true", group_by: [user], field: attrs.country, learning: 1h}
`)
	st := &State{}
	steps := []struct {
		sec   int
		value string
		want  Verdict
	}{
		{0, "DE", Counted},      // learning
		{1800, "FR", Counted},   // still learning
		{3600, "DE", Duplicate}, // known
		{3601, "KP", Fired},     // new, after learning
		{3700, "KP", Duplicate}, // known now
	}
	for _, s := range steps {
		if _, v := Apply(r, st, match(0, s.sec, "e"+s.value, s.value), 0); v != s.want {
			t.Errorf("%s at %ds: verdict %v, want %v", s.value, s.sec, v, s.want)
		}
	}
}

// Repeats of one value must not push the other values out of a distinct
// rule's bounded state (NSG v2 logs one tuple per flow begin, continue and
// end; web traffic repeats 443 endlessly).
func TestDistinctSurvivesRepeats(t *testing.T) {
	r := loadRule(t, `
rules:
  - {id: scan, title: T, kind: distinct, severity: 5, condition: "true", group_by: [src_ip], field: dst_port, threshold: 25, window: 5m}
`)
	st := &State{}
	n, fired := 0, false
	for port := 1; port <= 25 && !fired; port++ {
		a, _ := Apply(r, st, &event.Match{Key: "k", Time: t0.Add(time.Duration(n) * 400 * time.Millisecond), EventID: fmt.Sprint(n), Value: fmt.Sprint(port)}, 0)
		fired = a != nil
		n++
		for i := 0; i < 20 && !fired; i++ {
			a, _ := Apply(r, st, &event.Match{Key: "k", Time: t0.Add(time.Duration(n) * 400 * time.Millisecond), EventID: fmt.Sprint(n), Value: "443"}, 0)
			fired = a != nil
			n++
		}
	}
	if !fired {
		t.Errorf("25 distinct ports among %d events in %s did not fire", n, time.Duration(n)*400*time.Millisecond)
	}
}

// Events sharing the timestamp of the last event an alert used are new
// events, not duplicates (one-second timestamps make ties common).
func TestSpentTiesAreNotDuplicates(t *testing.T) {
	r := loadRule(t, threshold3in60s)
	st := &State{}
	var verdicts []Verdict
	for i, sec := range []int{0, 0, 1, 1, 1, 2} {
		_, v := Apply(r, st, &event.Match{Key: "k", Time: t0.Add(time.Duration(sec) * time.Second), EventID: fmt.Sprint(i)}, 0)
		verdicts = append(verdicts, v)
	}
	want := []Verdict{Counted, Counted, Fired, Counted, Counted, Fired}
	if !slices.Equal(verdicts, want) {
		t.Errorf("verdicts %v, want %v", verdicts, want)
	}
	// The event that completed the first window, redelivered, is a duplicate.
	if _, v := Apply(r, st, &event.Match{Key: "k", Time: t0.Add(2 * time.Second), EventID: "5"}, 0); v != Duplicate {
		t.Errorf("redelivered spent event: %v", v)
	}
}

// A silence inside a backlog (the gap and the event after it read in one
// go) is reported, with the same id the timer would have given it.
func TestAbsenceGapInsideBacklog(t *testing.T) {
	r := loadRule(t, `
rules:
  - {id: quiet, title: T, kind: absence, severity: 5, condition: "true", group_by: [host], for: 30m}
`)
	live, backlog := &State{}, &State{}
	Apply(r, live, match(0, 0, "e1", ""), 0)
	timerAlert, _ := Expire(r, live, "k=v", t0.Add(31*time.Minute).UnixNano())
	Apply(r, backlog, match(0, 0, "e1", ""), 0)
	a, v := Apply(r, backlog, match(0, 45*60, "e2", ""), 0)
	if v != Fired || a == nil || timerAlert == nil || a.ID != timerAlert.ID {
		t.Fatalf("backlog verdict %v alert %+v, timer alert %+v", v, a, timerAlert)
	}
}

// The windows cache hands each batch a copy: changing it must not change
// the committed state the cache holds.
func TestCloneIsDeep(t *testing.T) {
	st := &State{Times: []int64{1, 2}, IDs: []string{"a", "b"}, Values: []string{"x", "y"}, Seen: []string{"DE"}, SpentIDs: []string{"z"}}
	c := st.Clone()
	c.Times[0], c.IDs[0], c.Values[0], c.Seen[0], c.SpentIDs[0] = 9, "q", "q", "q", "q"
	c.Times = append(c.Times, 3)
	if st.Times[0] != 1 || st.IDs[0] != "a" || st.Values[0] != "x" || st.Seen[0] != "DE" || st.SpentIDs[0] != "z" || len(st.Times) != 2 {
		t.Errorf("clone shares memory with the original: %+v", st)
	}
}

// An absence alert carries the rule's fields, taken from the event the
// silence is counted from (the trigger, with expect) — whether the timer
// fires it, or the event after the gap in a backlog does.
func TestAbsenceAlertCarriesFields(t *testing.T) {
	r := loadRule(t, `
rules:
  - {id: quiet, title: T, kind: absence, severity: 5, condition: "true", group_by: [host], for: 30m, fields: [host, app]}
`)
	at := func(sec int, id, app string) *event.Match {
		m := match(0, sec, id, "")
		m.Key, m.Fields = "host=web-01", map[string]string{"host": "web-01", "app": app}
		return m
	}
	want := map[string]string{"host": "web-01", "app": "cron"}
	st := &State{}
	Apply(r, st, at(0, "e1", "sshd"), 0)
	Apply(r, st, at(60, "e2", "cron"), 0)
	var stored State // the fields survive a commit and a restart
	if err := DecodeState(AppendState(nil, st), &stored); err != nil {
		t.Fatal(err)
	}
	st = roundTrip(t, &stored)
	a, _ := Expire(r, st, "host=web-01", t0.Add(time.Hour).UnixNano())
	if a == nil || !maps.Equal(a.Fields, want) {
		t.Fatalf("timer alert %+v, want fields %v", a, want)
	}
	backlog := &State{}
	Apply(r, backlog, at(60, "e2", "cron"), 0)
	a, _ = Apply(r, backlog, at(45*60, "e3", "sshd"), 0)
	if a == nil || !maps.Equal(a.Fields, want) {
		t.Fatalf("backlog alert %+v, want fields %v (of the event before the gap)", a, want)
	}

	// With expect, the trigger's fields.
	re := loadRule(t, `
rules:
  - {id: ack, title: T, kind: absence, severity: 5, condition: 'action == "start"', expect: 'action == "done"', group_by: [host], for: 5m, fields: [host]}
`)
	st = &State{}
	trigger := match(0, 0, "s", "")
	trigger.Fields = map[string]string{"host": "db-01"}
	Apply(re, st, trigger, 0)
	a, _ = Apply(re, st, match(1, 400, "d", ""), 0) // too late, and carries nothing
	if a == nil {
		a, _ = Expire(re, st, "host=db-01", t0.Add(time.Hour).UnixNano())
	}
	if a == nil || a.Fields["host"] != "db-01" {
		t.Fatalf("expect alert %+v, want host=db-01", a)
	}
}

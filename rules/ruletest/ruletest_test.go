package ruletest

import (
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/outpost-siem/outpost/rules"
)

// The shipped pack's own tests pass, and every shipped rule has a positive
// case (it must fire) and a negative one (it must not).
func TestShippedPack(t *testing.T) {
	set, err := rules.Pack()
	if err != nil {
		t.Fatal(err)
	}
	positive, negative := map[string]bool{}, map[string]bool{}
	for _, tc := range set.Tests {
		res := Run(set, tc)
		if !res.Pass() {
			t.Errorf("%s:%d %s: err %v\n%s", tc.File, tc.Line, tc.Name, res.Err, res.Diff)
		}
		for _, id := range tc.Rules {
			fires := false
			for _, e := range tc.Expect {
				fires = fires || e.Rule == id
			}
			if fires {
				positive[id] = true
			} else {
				negative[id] = true
			}
		}
	}
	for _, r := range set.Rules {
		if !positive[r.ID] || !negative[r.ID] {
			t.Errorf("rule %s (%s:%d) lacks a positive (%v) or a negative (%v) test case", r.ID, r.File, r.Line, positive[r.ID], negative[r.ID])
		}
	}
}

// A failing test says what was expected and what came instead.
func TestDiff(t *testing.T) {
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(`
rules:
  - {id: t2, title: T, kind: threshold, severity: 1, condition: 'outcome == "failure"', group_by: [user], threshold: 2, window: 1m}
tests:
  - name: wrong expectation
    events:
      - {at: 0s, outcome: failure, user: a}
      - {at: 1s, outcome: failure, user: a}
    expect:
      - {rule: t2, key: user=b}
`)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	res := Run(set, set.Tests[0])
	if res.Pass() {
		t.Fatal("a wrong expectation passed")
	}
	for _, want := range []string{"- expected rule=t2 key=user=b", "+ got      rule=t2 key=user=a count=2"} {
		if !strings.Contains(res.Diff, want) {
			t.Errorf("diff lacks %q:\n%s", want, res.Diff)
		}
	}
}

// An absence alert carries the rule's fields, from the event the silence is
// counted from, as every other kind's alert does.
func TestAbsenceAlertCarriesFields(t *testing.T) {
	set, err := rules.Pack()
	if err != nil {
		t.Fatal(err)
	}
	var tc *rules.Test
	for _, c := range set.Tests {
		if c.Name == "a host silent for longer than 30 minutes" {
			tc = c
		}
	}
	if tc == nil {
		t.Fatal("the pack's log-source-silent test case is gone")
	}
	alerts, err := Alerts(set, tc)
	if err != nil {
		t.Fatal(err)
	}
	if len(alerts) == 0 {
		t.Fatal("no alert")
	}
	for _, a := range alerts {
		if want := strings.TrimPrefix(a.Key, "host="); a.Fields["host"] != want {
			t.Errorf("alert for %s carries fields %v, want host=%s", a.Key, a.Fields, want)
		}
	}
}

// A test event stamped ahead of its `received` time is placed at its
// reception, as the pipeline places it: one event of victim01 claiming
// 2099 neither passes every deadline (web-01's silence, 40m, fired at
// once) nor freezes victim01's silence, which counts from 1m, its
// reception.
func TestFutureStampedEventIsPlacedAtItsReception(t *testing.T) {
	set, err := rules.LoadFS(fstest.MapFS{"r.yaml": {Data: []byte(`
rules:
  - {id: silent, title: T, kind: absence, severity: 5, condition: 'host != ""', group_by: [host], for: 30m}
tests:
  - name: not yet
    advance: 20m
    events:
      - {at: 0m, host: web-01}
      - {at: 0m, host: victim01}
      - {time: "2099-01-01T00:00:00Z", received: "2026-01-01T00:01:00Z", host: victim01}
      - {at: 10m, host: web-01}
  - name: both silent
    advance: 1h
    events:
      - {at: 0m, host: web-01}
      - {at: 0m, host: victim01}
      - {time: "2099-01-01T00:00:00Z", received: "2026-01-01T00:01:00Z", host: victim01}
      - {at: 10m, host: web-01}
`)}}, ".")
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	want := [][]string{
		nil,
		{"host=victim01 since " + base.Add(time.Minute).Format(time.RFC3339), "host=web-01 since " + base.Add(10*time.Minute).Format(time.RFC3339)},
	}
	for i, tc := range set.Tests {
		alerts, err := Alerts(set, tc)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range alerts {
			got = append(got, a.Key+" since "+a.FirstSeen.Format(time.RFC3339))
		}
		slices.Sort(got)
		if !slices.Equal(got, want[i]) {
			t.Errorf("%s: silences %v, want %v", tc.Name, got, want[i])
		}
	}
}

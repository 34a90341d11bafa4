package console_test

import (
	"encoding/json"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/console"
	"github.com/outpost-siem/outpost/aggregator/event"
)

const quiet = 3 // the fixture's first samples, before anything went out

// Hostile input, as a sender could put it in a syslog line: the page must
// show it as text.
const (
	hostileScript = `<script>alert(1)</script>`
	hostileImg    = `<img src=x onerror=alert(2)>`
	hostileHost   = `evil<img src=x onerror=alert(3)>`
)

// fixture is a realistic snapshot and the alerts behind its list.
type fixture struct {
	snap   console.Snapshot
	alerts map[string]event.Alert
}

func newFixture(now time.Time) fixture {
	const samples = 60
	const step = 10
	s := console.Series{Step: step, EventsIn: map[string][]float64{}, BytesInBy: map[string][]float64{}}
	for i := range samples {
		s.Times = append(s.Times, now.Add(-time.Duration(samples-1-i)*step*time.Second).Unix())
	}
	wave := func(base, amp float64, phase int) []float64 {
		v := make([]float64, samples)
		for i := range v {
			v[i] = math.Round(base + amp*math.Sin(float64(i+phase)/6))
		}
		return v
	}
	s.EventsIn["syslog/udp"] = wave(420, 80, 0)
	s.EventsIn["syslog/tls"] = wave(150, 40, 3)
	s.EventsIn["azure_blob/blob"] = wave(60, 30, 7)
	for k, v := range s.EventsIn {
		for _, x := range v {
			s.BytesInBy[k] = append(s.BytesInBy[k], x*310)
		}
	}
	for i := range samples {
		in := (s.EventsIn["syslog/udp"][i] + s.EventsIn["syslog/tls"][i] + s.EventsIn["azure_blob/blob"][i]) * 310
		out, ratio := 900+400*math.Sin(float64(i)/4), 0.0
		if i < quiet {
			out = 0 // nothing went out yet: the ratio is 0, drawn as a gap
		} else {
			ratio = math.Round(in / out)
		}
		s.BytesIn = append(s.BytesIn, in)
		s.BytesOut = append(s.BytesOut, out)
		s.Ratio = append(s.Ratio, ratio)
		s.Alerts = append(s.Alerts, float64(i%7)/10)
	}

	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	at := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }

	alerts := []event.Alert{
		{
			ID: "a1f0c2d4e6b8a0c1", RuleID: "ssh.bruteforce", Title: "SSH brute force against one host",
			Description: "More than 20 failed SSH logins from one source within 5 minutes.",
			Severity:    5, Tags: []string{"attack.credential_access", "attack.t1110"}, Kind: "threshold",
			GroupBy: []string{"src_ip", "host"}, Key: "203.0.113.7|web-01", Count: 37,
			FirstSeen: ago(6 * time.Minute), LastSeen: ago(70 * time.Second),
			EventIDs: []string{"01JEV0001", "01JEV0002", "01JEV0003", "01JEV0004"},
			Fields:   map[string]string{"src_ip": "203.0.113.7", "user": "root", "host": "web-01"},
		},
		{
			ID: "a1f0c2d4e6b8a0c2", RuleID: "ssh.bruteforce", Title: "SSH brute force against one host",
			Severity: 5, Kind: "threshold", GroupBy: []string{"src_ip", "host"}, Key: "198.51.100.23|fw-01",
			Count: 22, FirstSeen: ago(12 * time.Minute), LastSeen: ago(8 * time.Minute),
			EventIDs: []string{"01JEV0101", "01JEV0102"},
			Fields:   map[string]string{"src_ip": "198.51.100.23", "user": "admin", "host": "fw-01"},
		},
		{
			ID: "b7c9e1f3a5d7b9c3", RuleID: "azure.impossible_travel", Title: "Sign-in from two countries within an hour",
			Description: "A user signed in successfully from two countries too far apart to travel between.",
			Severity:    9, Tags: []string{"attack.initial_access"}, Kind: "sequence",
			GroupBy: []string{"user"}, Key: "alice@example.com", Count: 2,
			FirstSeen: ago(40 * time.Minute), LastSeen: ago(3 * time.Minute),
			EventIDs: []string{"01JAZ0501", "01JAZ0502"},
			Steps: []event.StepHit{
				{Name: "signin_home", Time: ago(40 * time.Minute), EventID: "01JAZ0501"},
				{Name: "signin_abroad", Time: ago(3 * time.Minute), EventID: "01JAZ0502"},
			},
			Fields: map[string]string{"user": "alice@example.com", "country": "NZ", "src_ip": "192.0.2.44", "note": hostileScript},
			CEF:    map[string]string{"suser": "alice@example.com", "cs1": "NZ", "cs1Label": "country"},
		},
		{
			ID: "a1f0c2d4e6b8a0c4", RuleID: "ssh.bruteforce", Title: "SSH brute force against one host",
			Severity: 5, Kind: "threshold", GroupBy: []string{"src_ip", "host"}, Key: hostileImg,
			Count: 25, FirstSeen: ago(30 * time.Minute), LastSeen: ago(25 * time.Minute),
			EventIDs: []string{"01JEV0201"},
		},
		{
			ID: "b7c9e1f3a5d7b9c5", RuleID: "azure.impossible_travel", Title: "Sign-in from two countries within an hour",
			Severity: 9, Kind: "sequence", GroupBy: []string{"user"}, Key: "bob@example.com", Count: 2,
			FirstSeen: ago(50 * time.Minute), LastSeen: ago(45 * time.Minute),
			EventIDs: []string{"01JAZ0601", "01JAZ0602"},
		},
	}
	// The list is newest first, as the pipeline serves it.
	slices.SortFunc(alerts, func(a, b event.Alert) int { return b.LastSeen.Compare(a.LastSeen) })
	f := fixture{alerts: map[string]event.Alert{}}
	var rows []console.AlertRow
	for _, a := range alerts {
		f.alerts[a.ID] = a
		rows = append(rows, console.AlertRow{ID: a.ID, Rule: a.RuleID, Title: a.Title, Severity: a.Severity, Key: a.Key, Count: a.Count, Time: a.LastSeen})
	}

	f.snap = console.Snapshot{
		Now: now, Version: "0.16.0-test", Started: ago(26 * time.Hour),
		Top: console.Top{
			Ready: true, EventsIn: 48_213_554, BytesIn: 15.2e9, AlertsOut: 1_284, BytesOut: 1.9e6,
			Ratio: 8000, StaleSources: 1, Backlog: 42, DeadLetters: 17,
		},
		Series:     s,
		StaleAfter: 300,
		Sources: []console.SourceHost{
			{Source: "syslog", Host: "fw-01", LastEvent: ago(2 * time.Second), Events: 31_200_112},
			{Source: "syslog", Host: "web-01", LastEvent: ago(12 * time.Second), Events: 9_811_004},
			{Source: "syslog", Host: "dc-01", LastEvent: ago(21 * time.Minute), Events: 4_002_117, Stale: true},
			{Source: "syslog", Host: hostileHost, LastEvent: ago(40 * time.Second), Events: 3},
			{Source: "azure.signin", Host: "stlogs01/insights-logs-signinlogs", LastEvent: ago(75 * time.Second), Events: 3_198_318},
		},
		Rules: console.Rules{
			Loaded: 24, LastReload: at(14 * time.Minute), LastResult: "rejected",
			LastErrors: []string{
				"rules/pack/ssh.yaml:12:5: rule ssh.bruteforce: threshold: count must be positive",
				"rules/pack/azure.yaml:40:3: rule azure.legacy_auth: unknown field \"sevrity\"",
			},
			PerRule: []console.RuleRow{
				{ID: "ssh.bruteforce", Title: "SSH brute force against one host", Kind: "threshold", Severity: 5, Matches: 12_044, Alerts: 3},
				{ID: "azure.impossible_travel", Title: "Sign-in from two countries within an hour", Kind: "sequence", Severity: 9, Matches: 310, Alerts: 2},
				{ID: "sudo.root_shell", Title: "Interactive root shell through sudo", Kind: "match", Severity: 7, Matches: 0, Alerts: 0},
			},
		},
		Alerts: rows,
		Destinations: []console.Destination{
			{Name: "siem-primary", Address: "siem1.example.net:6514", Transport: "tls", Connected: true, AlertsOut: 1_242, BytesOut: 1_850_000},
			{Name: "siem-dr", Address: "siem2.example.net:2514", Transport: "relp", Connected: false, AlertsOut: 42, BytesOut: 61_000, Backlog: 42, OldestAge: 754, Failover: 42, Errors: 9},
		},
		DeadLetters: console.DeadLetters{
			Counts: []console.DeadCount{
				{Stage: "ingest", Reason: "parse", Count: 12},
				{Stage: "ingest", Reason: "oversize", Count: 4},
				{Stage: "forwarder", Reason: "encode", Count: 1},
			},
			Latest: []console.DeadLetter{
				{Time: ago(30 * time.Second), Stage: "ingest", Reason: "parse", Sender: "10.0.0.66:514", Sample: "<13>1 " + hostileScript + " " + hostileImg},
				{Time: ago(4 * time.Minute), Stage: "ingest", Reason: "oversize", Sender: "10.0.0.12:6514", Sample: strings.Repeat("A", 200) + "…"},
			},
		},
		Pipeline: console.Pipeline{
			Stages: []console.Stage{
				{Name: "ingest", Rate: 630, Lag: 0, Watermark: at(1 * time.Second)},
				{Name: "filter", Rate: 628, Lag: 12, Watermark: at(2 * time.Second)},
				{Name: "windows", Rate: 40, Lag: 0, Watermark: at(5 * time.Second)},
				{Name: "forwarder", Rate: 0.2, Lag: 42},
			},
			Streams: []console.Stream{
				{Name: "EVENTS", Msgs: 1_200_000, Bytes: 820 << 20, MaxBytes: 1 << 30, Use: 820.0 / 1024},
				{Name: "ALERTS", Msgs: 1_284, Bytes: 2 << 20, MaxBytes: 256 << 20, Use: 2.0 / 256},
				{Name: "DEADLETTER", Msgs: 17, Bytes: 9_000, MaxBytes: 64 << 20, Use: 9000.0 / (64 << 20)},
			},
			BadgerBytes: 211 << 20, LiveKeys: 18_230, HeapBytes: 96 << 20, RSSBytes: 188 << 20, MemoryLimit: 512 << 20,
		},
	}
	return f
}

// serve runs the console's handler with the fixture's /api/console and
// /alerts/{id} on 127.0.0.1, as the pipeline mounts them.
func (f fixture) serve(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/", console.Handler())
	mux.HandleFunc("GET /api/console", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(f.snap)
	})
	mux.HandleFunc("GET /alerts/{id}", func(w http.ResponseWriter, r *http.Request) {
		a, ok := f.alerts[r.PathValue("id")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(a)
	})
	return loopbackServer(t, mux)
}

func loopbackServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: h}}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

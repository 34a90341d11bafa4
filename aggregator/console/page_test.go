package console_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/console"
)

// -screenshot writes the fixture page as a PNG, to look at the layout after
// changing it (docs/img/status.png comes from the end-to-end test instead).
var screenshotPath = flag.String("screenshot", "", "write a full-page PNG of the fixture page to this path")

func TestPageRendersSnapshot(t *testing.T) {
	f := newFixture(time.Now().UTC().Truncate(time.Second))
	srv := f.serve(t)

	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Content-Security-Policy"); got != console.CSP {
		t.Fatalf("CSP header %q, want %q", got, console.CSP)
	}

	ctx := newBrowser(t)
	pl := loadPage(t, ctx, srv.URL+"/")

	t.Run("charts", func(t *testing.T) {
		charts := chartPoints(t, ctx)
		n := len(f.snap.Series.Times)
		want := map[string][]string{
			"events_in":   {"azure_blob/blob", "syslog/tls", "syslog/udp"},
			"bytes_in_by": {"azure_blob/blob", "syslog/tls", "syslog/udp"},
			"link":        {"in", "out"},
			"ratio":       {"in per out"},
			"alerts":      {"alerts"},
		}
		if len(charts) != len(want) {
			t.Errorf("charts %v, want %d", charts, len(want))
		}
		for series, lines := range want {
			c, ok := charts[series]
			if !ok {
				t.Errorf("no chart %s", series)
				continue
			}
			if c.Points != n {
				t.Errorf("chart %s: %d points, want %d", series, c.Points, n)
			}
			if len(c.Lines) != len(lines) {
				t.Errorf("chart %s: lines %v, want %v", series, c.Lines, lines)
			}
			for _, l := range lines {
				want := n
				if series == "ratio" {
					want = n - quiet // no ratio while nothing went out
				}
				if c.Lines[l] != want {
					t.Errorf("chart %s line %s: %d points drawn, want %d", series, l, c.Lines[l], want)
				}
			}
		}
	})

	t.Run("top row", func(t *testing.T) {
		for key, want := range map[string]string{
			"ready":           "ready",
			"reduction_ratio": "8,000× fewer bytes",
			"stale_sources":   "1",
			"backlog_alerts":  "42 alerts",
			"dead_letters":    "17",
			"bytes_in":        "14.2 GiB",
		} {
			if got := text(t, ctx, `.tile[data-key="`+key+`"] .value`); got != want {
				t.Errorf("tile %s: %q, want %q", key, got, want)
			}
		}
	})

	t.Run("stale source", func(t *testing.T) {
		type row struct {
			Host  string
			Stale bool
			Badge string
			Age   string
		}
		rows := eval[[]row](t, ctx, `[...document.querySelectorAll('#sources tbody tr')].map((r) => ({
			Host: r.cells[1].firstChild.textContent, Stale: r.classList.contains('stale'),
			Badge: (r.querySelector('.badge.stale') || {}).textContent || '', Age: r.cells[2].textContent }))`)
		if len(rows) != len(f.snap.Sources) {
			t.Fatalf("%d source rows, want %d", len(rows), len(f.snap.Sources))
		}
		if !rows[0].Stale || rows[0].Host != "dc-01" || rows[0].Badge != "stale" || rows[0].Age != "21 min ago" {
			t.Errorf("first source row %+v, want dc-01 flagged stale, 21 min ago", rows[0])
		}
		for _, r := range rows[1:] {
			if r.Stale || r.Badge != "" {
				t.Errorf("row %+v flagged stale", r)
			}
		}
	})

	t.Run("rules", func(t *testing.T) {
		if got := text(t, ctx, "#rules-summary"); !strings.Contains(got, "24 rules loaded") || !strings.Contains(got, "rejected") {
			t.Errorf("rules summary %q", got)
		}
		if got := text(t, ctx, "#rule-errors"); !strings.Contains(got, `unknown field "sevrity"`) {
			t.Errorf("rule errors %q", got)
		}
		if n := eval[int](t, ctx, `document.querySelectorAll('#rules tbody tr').length`); n != 3 {
			t.Errorf("%d rule rows, want 3", n)
		}
	})

	t.Run("alerts and filters", func(t *testing.T) {
		ids := func(rows []alertRowView) []string {
			var out []string
			for _, r := range rows {
				out = append(out, r.ID)
			}
			return out
		}
		var all []string
		for _, a := range f.snap.Alerts {
			all = append(all, a.ID)
		}
		if got := ids(alertRows(t, ctx)); !slices.Equal(got, all) {
			t.Fatalf("alert rows %v, want %v", got, all)
		}
		for _, tc := range []struct {
			rule   string
			minSev int
		}{
			{"ssh.bruteforce", 0},
			{"azure.impossible_travel", 0},
			{"", 7},
			{"", 9},
			{"", 4},
			{"ssh.bruteforce", 9},
			{"", 0},
		} {
			setAlertFilter(t, ctx, tc.rule, tc.minSev)
			var want []string
			for _, a := range f.snap.Alerts {
				if (tc.rule == "" || a.Rule == tc.rule) && a.Severity >= tc.minSev {
					want = append(want, a.ID)
				}
			}
			if got := ids(alertRows(t, ctx)); !slices.Equal(got, want) {
				t.Errorf("rule %q severity %d+: rows %v, want %v", tc.rule, tc.minSev, got, want)
			}
		}
		if got := text(t, ctx, "#filter-rule"); got != "all rulesazure.impossible_travelssh.bruteforce" {
			t.Errorf("rule filter options %q", got)
		}
	})

	t.Run("alert detail", func(t *testing.T) {
		a := f.alerts["b7c9e1f3a5d7b9c3"]
		clickAlert(t, ctx, a.ID)
		d := alertDetail(t, ctx)
		if !d.Visible || d.Title != a.Title {
			t.Errorf("detail visible %v title %q, want %q", d.Visible, d.Title, a.Title)
		}
		if !slices.Equal(d.EventIDs, a.EventIDs) {
			t.Errorf("evidence %v, want %v", d.EventIDs, a.EventIDs)
		}
		for k, v := range a.Fields {
			if d.Fields[k] != v {
				t.Errorf("field %s = %q, want %q", k, d.Fields[k], v)
			}
		}
		if len(d.Steps) != 2 || !strings.Contains(d.Steps[1], "signin_abroad") || !strings.Contains(d.Steps[1], "01JAZ0502") {
			t.Errorf("steps %q", d.Steps)
		}
		for _, want := range []string{a.Description, "azure.impossible_travel", "alice@example.com", "37 min", "attack.initial_access", "9 critical"} {
			if !strings.Contains(d.Text, want) {
				t.Errorf("detail lacks %q: %s", want, d.Text)
			}
		}
		rows := alertRows(t, ctx)
		for _, r := range rows {
			if r.Selected != (r.ID == a.ID) {
				t.Errorf("row %s selected %v", r.ID, r.Selected)
			}
		}

		// A second alert replaces the first; its key was hostile text.
		b := f.alerts["a1f0c2d4e6b8a0c4"]
		clickAlert(t, ctx, b.ID)
		if d := alertDetail(t, ctx); !strings.Contains(d.Text, hostileImg) || !slices.Equal(d.EventIDs, b.EventIDs) {
			t.Errorf("second alert: %+v", d)
		}
		clickAlert(t, ctx, a.ID)
	})

	t.Run("forwarding and pipeline", func(t *testing.T) {
		type dest struct {
			Down  bool
			Cells []string
		}
		dests := eval[[]dest](t, ctx, `[...document.querySelectorAll('#destinations tbody tr')].map((r) => ({
			Down: r.classList.contains('down'), Cells: [...r.cells].map((c) => c.textContent) }))`)
		if len(dests) != 2 || dests[0].Down || !dests[1].Down ||
			dests[1].Cells[3] != "disconnected" || dests[1].Cells[6] != "42" || dests[1].Cells[7] != "12 min 34 s" {
			t.Errorf("destinations %+v", dests)
		}
		uses := eval[[]string](t, ctx, `[...document.querySelectorAll('#streams svg.bar')].map((s) => s.dataset.use)`)
		if len(uses) != 3 || uses[0] != "0.80078125" {
			t.Errorf("stream usage bars %v", uses)
		}
		if got := text(t, ctx, "#store"); !strings.Contains(got, "211 MiB") || !strings.Contains(got, "37% of the limit") {
			t.Errorf("store facts %q", got)
		}
	})

	t.Run("hostile text stays text", func(t *testing.T) {
		samples := eval[[]string](t, ctx, `[...document.querySelectorAll('#dead-latest pre.sample-text')].map((p) => p.textContent)`)
		if len(samples) != 2 || samples[0] != f.snap.DeadLetters.Latest[0].Sample {
			t.Errorf("dead letter samples %q", samples)
		}
		if got := text(t, ctx, "#sources"); !strings.Contains(got, hostileHost) {
			t.Errorf("hostile host not shown as text: %q", got)
		}
		injected := eval[int](t, ctx, `document.querySelectorAll('img, iframe, object, embed, main script, [onerror]').length`)
		scripts := eval[int](t, ctx, `document.scripts.length`)
		if injected != 0 || scripts != 1 {
			t.Errorf("%d injected elements and %d scripts (want 0 and 1)", injected, scripts)
		}
	})

	t.Run("refresh keeps the view", func(t *testing.T) {
		// The page polls every 5 s; the next render keeps the selection,
		// the filters and the open panel.
		setAlertFilter(t, ctx, "azure.impossible_travel", 0)
		n := eval[int](t, ctx, `Number(document.body.dataset.renders)`)
		deadline := time.Now().Add(15 * time.Second)
		for eval[int](t, ctx, `Number(document.body.dataset.renders)`) == n {
			if time.Now().After(deadline) {
				t.Fatal("the page did not refresh within 15 s")
			}
			time.Sleep(200 * time.Millisecond)
		}
		rows := alertRows(t, ctx)
		if len(rows) != 2 || !rows[0].Selected {
			t.Errorf("after a refresh: rows %+v", rows)
		}
		if d := alertDetail(t, ctx); d.ID != "b7c9e1f3a5d7b9c3" || !d.Visible {
			t.Errorf("after a refresh the detail shows %q (visible %v)", d.ID, d.Visible)
		}
		setAlertFilter(t, ctx, "", 0)
	})

	if *screenshotPath != "" {
		screenshot(t, ctx, *screenshotPath)
	}
	if d := pl.Dialogs(); len(d) > 0 {
		t.Errorf("dialogs opened: %q", d)
	}
}

// TestPageSaysNotAuthorised: a 401 from /api/console is shown as such, not
// as a broken page.
func TestPageSaysNotAuthorised(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/", console.Handler())
	mux.HandleFunc("GET /api/console", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "unauthorised", http.StatusUnauthorized)
	})
	srv := loopbackServer(t, mux)

	ctx := newBrowser(t)
	pl := watchPage(t, ctx)
	if state := openPage(t, ctx, srv.URL+"/"); state != "unauthorised" {
		t.Fatalf("page state %q, want unauthorised", state)
	}
	if got := text(t, ctx, "#notice"); !strings.HasPrefix(got, "Not authorised") {
		t.Errorf("notice %q", got)
	}
	// The browser itself logs the failed request; nothing else may appear.
	for _, p := range pl.Problems() {
		if !strings.Contains(p, "401") {
			t.Errorf("the page reported: %s", p)
		}
	}
}

// TestHarnessSeesCSPViolations shows that the harness would catch the page
// breaking its CSP: an inline script under the same policy is reported.
func TestHarnessSeesCSPViolations(t *testing.T) {
	srv := loopbackServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", console.CSP)
		fmt.Fprint(w, `<!doctype html><title>x</title><body data-state="ok"><p style="color:red">x</p><script>document.title = 'ran'</script></body>`)
	}))
	ctx := newBrowser(t)
	pl := watchPage(t, ctx)
	openPage(t, ctx, srv.URL+"/")
	deadline := time.Now().Add(5 * time.Second)
	for len(pl.Problems()) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	var csp int
	for _, p := range pl.Problems() {
		if strings.Contains(p, "Content Security Policy") {
			csp++
		}
	}
	if csp < 2 {
		t.Errorf("want the inline script and style reported as CSP violations, got %q", pl.Problems())
	}
	if title := eval[string](t, ctx, `document.title`); title != "x" {
		t.Errorf("the inline script ran: title %q", title)
	}
}

// TestPageRendersEmptySnapshot: a pipeline that just started has nothing to
// show yet (null lists, no samples); the page says so without an error.
func TestPageRendersEmptySnapshot(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/", console.Handler())
	mux.HandleFunc("GET /api/console", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(console.Snapshot{Now: time.Now(), Started: time.Now()})
	})
	srv := loopbackServer(t, mux)

	ctx := newBrowser(t)
	loadPage(t, ctx, srv.URL+"/")
	for series, c := range chartPoints(t, ctx) {
		if c.Points != 0 {
			t.Errorf("chart %s: %d points, want 0", series, c.Points)
		}
	}
	if rows := alertRows(t, ctx); len(rows) != 0 {
		t.Errorf("alert rows %v", rows)
	}
	for sel, want := range map[string]string{
		"#alerts-empty": "No alerts yet.",
		`.tile[data-key="reduction_ratio"] .value`: "nothing sent yet",
		`.tile[data-key="ready"] .value`:           "not ready",
		"#sources tbody":                           "No source has received anything yet.",
		"#rules-summary":                           "0 rules loaded · not reloaded since start",
		`#chart-events svg.chart text.empty`:       "no samples yet",
	} {
		if got := text(t, ctx, sel); got != want {
			t.Errorf("%s: %q, want %q", sel, got, want)
		}
	}
}

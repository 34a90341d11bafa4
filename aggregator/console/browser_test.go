package console_test

// A small harness that drives the status page in a real headless Chromium
// (Debian's chromium) through chromedp. It is written to be reused by the
// end-to-end test against a running pipeline:
//
//	ctx := newBrowser(t)
//	loadPage(t, ctx, "http://"+addr+"/")      // fails the test on console errors
//	charts := chartPoints(t, ctx)             // series -> points drawn
//	rows := alertRows(t, ctx)                 // the alert list as shown
//	clickAlert(t, ctx, rows[0].ID)            // opens #alert-detail
//	d := alertDetail(t, ctx)                  // its evidence and fields
//	screenshot(t, ctx, "docs/img/status.png") // full page PNG

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

const installChromium = "Chromium is needed for the browser tests (Debian: apt-get install chromium)"

// chromiumPath finds Debian's Chromium. Without it the test is skipped,
// except with CI=true, where it fails: .ci/run installs it.
func chromiumPath(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "/usr/bin/chromium"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(installChromium + "; CI=true, so this is a failure")
	}
	t.Skip(installChromium)
	return ""
}

// newBrowser starts a headless Chromium for this test and returns the context
// of one tab. The browser is closed when the test ends; every action on the
// tab shares a 2 minute deadline. The browser resolves no name and so reaches
// nothing but loopback.
func newBrowser(t testing.TB) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.UserDataDir(t.TempDir()),
		// Tests run as root in CI, where Chromium's sandbox cannot start;
		// the pages are our own, served on loopback.
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(1440, 1000),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTime := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() {
		cancelTime()
		cancelTab()
		cancelAlloc()
	})
	// Start the browser now, so that a failure to start says so.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// pageLog collects what a page reports that a person would call a problem:
// console errors and warnings, uncaught exceptions, browser log entries of
// level warning or error (failed loads, CSP violations) and dialogs.
type pageLog struct {
	mu       sync.Mutex
	problems []string
	dialogs  []string
}

// Problems returns what was reported so far.
func (l *pageLog) Problems() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.problems...)
}

// Dialogs returns the messages of the dialogs the page opened (and that the
// harness dismissed).
func (l *pageLog) Dialogs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.dialogs...)
}

func (l *pageLog) add(s string) {
	l.mu.Lock()
	l.problems = append(l.problems, s)
	l.mu.Unlock()
}

// watchPage starts collecting the tab's problems; it sees what happens after
// it returns.
func watchPage(t testing.TB, ctx context.Context) *pageLog {
	t.Helper()
	l := &pageLog{}
	err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning || ev.Type == runtime.ConsoleAPICalledTypeAssert {
				var args []string
				for _, a := range ev.Args {
					args = append(args, strings.Trim(string(a.Value), `"`)+a.Description)
				}
				l.add("console." + string(ev.Type) + ": " + strings.Join(args, " "))
			}
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			l.add("exception: " + msg)
		case *log.EventEntryAdded:
			if ev.Entry.Level == log.EntryLevelError || ev.Entry.Level == log.EntryLevelWarning {
				l.add("log " + string(ev.Entry.Source) + " " + string(ev.Entry.Level) + ": " + ev.Entry.Text + " " + ev.Entry.URL)
			}
		case *page.EventJavascriptDialogOpening:
			l.mu.Lock()
			l.dialogs = append(l.dialogs, string(ev.Type)+": "+ev.Message)
			l.mu.Unlock()
			// A dialog blocks the page; dismiss it from outside the
			// listener, which must not call the browser itself.
			go chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}
	})
	if err != nil {
		t.Fatalf("listening to the page: %v", err)
	}
	return l
}

// openPage navigates to url and waits until the page has either rendered a
// snapshot or given up; it returns body[data-state]: "ok", "unauthorised" or
// "error".
func openPage(t testing.TB, ctx context.Context, url string) string {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("opening %s: %v", url, err)
	}
	state, err := chromedp.Run(ctx, chromedp.Poll[string](
		`(() => { const s = document.body && document.body.dataset.state; return s && s !== 'loading' ? s : false })()`,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil {
		t.Fatalf("waiting for %s to render: %v", url, err)
	}
	return state
}

// loadPage opens the status page at url, waits for its first snapshot and
// fails the test if the page did not render one. From then on, until the
// test ends, every console error or warning, uncaught exception, failed
// load, CSP violation or dialog fails the test.
func loadPage(t testing.TB, ctx context.Context, url string) *pageLog {
	t.Helper()
	l := watchPage(t, ctx)
	t.Cleanup(func() {
		for _, p := range l.Problems() {
			t.Errorf("the page reported: %s", p)
		}
		for _, d := range l.Dialogs() {
			t.Errorf("the page opened a dialog: %s", d)
		}
	})
	if state := openPage(t, ctx, url); state != "ok" {
		t.Fatalf("the page is %q, not ok: %s", state, text(t, ctx, "#notice"))
	}
	return l
}

// eval runs a JavaScript expression in the page and decodes its JSON value
// into T.
func eval[T any](t testing.TB, ctx context.Context, expr string) T {
	t.Helper()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("decoding %s: %v", raw, err)
	}
	return v
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// text returns the textContent of the first element sel matches ("" when
// none does).
func text(t testing.TB, ctx context.Context, sel string) string {
	t.Helper()
	return eval[string](t, ctx, `(() => { const e = document.querySelector(`+jsString(sel)+`); return e ? e.textContent : '' })()`)
}

// chartView is one chart as drawn: the samples it says it has and, per
// line, the points actually in its path.
type chartView struct {
	Points int            // svg.chart[data-points]
	Lines  map[string]int // line name -> points drawn (path commands)
}

// chartPoints reads every svg.chart by data-series. A line's points are
// counted from its path's d attribute, and checked against its own
// data-points, so the attribute cannot claim what is not drawn.
func chartPoints(t testing.TB, ctx context.Context) map[string]chartView {
	t.Helper()
	type line struct {
		Name     string
		Declared int
		Drawn    int
	}
	type chart struct {
		Series string
		Points int
		Lines  []line
	}
	charts := eval[[]chart](t, ctx, `[...document.querySelectorAll('svg.chart')].map((s) => ({
		Series: s.dataset.series,
		Points: Number(s.dataset.points),
		Lines: [...s.querySelectorAll('path.line')].map((p) => ({
			Name: p.dataset.name,
			Declared: Number(p.dataset.points),
			Drawn: Number(p.dataset.points) === 0 ? 0 : (p.getAttribute('d').match(/[ML]/g) || []).length,
		})),
	}))`)
	out := make(map[string]chartView)
	for _, c := range charts {
		v := chartView{Points: c.Points, Lines: make(map[string]int)}
		for _, l := range c.Lines {
			if l.Declared != l.Drawn {
				t.Errorf("chart %s line %s: data-points %d, but %d points drawn", c.Series, l.Name, l.Declared, l.Drawn)
			}
			v.Lines[l.Name] = l.Drawn
		}
		out[c.Series] = v
	}
	return out
}

// alertRowView is one row of the alert list as shown.
type alertRowView struct {
	ID       string
	Rule     string
	Severity int
	Selected bool
}

// alertRows lists the alert rows shown (after the filters), top to bottom.
func alertRows(t testing.TB, ctx context.Context) []alertRowView {
	t.Helper()
	return eval[[]alertRowView](t, ctx, `[...document.querySelectorAll('#alerts tr.alert')].map((r) => ({
		ID: r.dataset.id, Rule: r.dataset.rule, Severity: Number(r.dataset.severity),
		Selected: r.classList.contains('selected'),
	}))`)
}

// setAlertFilter chooses a rule ("" for all) and a minimum severity (0, 1,
// 4, 7 or 9) in the alert filters, as a person would.
func setAlertFilter(t testing.TB, ctx context.Context, rule string, minSeverity int) {
	t.Helper()
	ok := eval[bool](t, ctx, `(() => {
		const set = (id, v) => {
			const s = document.getElementById(id);
			if (![...s.options].some((o) => o.value === v)) return false;
			s.value = v;
			s.dispatchEvent(new Event('change', { bubbles: true }));
			return true;
		};
		return set('filter-rule', `+jsString(rule)+`) && set('filter-severity', `+jsString(strconv.Itoa(minSeverity))+`);
	})()`)
	if !ok {
		t.Fatalf("the filters have no option rule %q, severity %d", rule, minSeverity)
	}
}

// clickAlert clicks the alert row with this id and waits until the detail
// panel has loaded it (or failed to: the test fails then).
func clickAlert(t testing.TB, ctx context.Context, id string) {
	t.Helper()
	sel := `#alerts tr.alert[data-id=` + jsString(id) + `]`
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(sel))); err != nil {
		t.Fatalf("clicking alert %s: %v", id, err)
	}
	state, err := chromedp.Run(ctx, chromedp.Poll[string](
		`(() => { const p = document.getElementById('alert-detail');
			return p.dataset.id === `+jsString(id)+` && p.dataset.state !== 'loading' && p.dataset.state })()`,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second)))
	if err != nil {
		t.Fatalf("waiting for alert %s to open: %v", id, err)
	}
	if state != "loaded" {
		t.Fatalf("alert %s: the detail panel is %q: %s", id, state, text(t, ctx, "#alert-detail"))
	}
}

// detailView is the open alert detail panel.
type detailView struct {
	ID       string
	State    string
	Visible  bool
	Title    string
	Text     string            // all its text
	EventIDs []string          // ul.evidence
	Fields   map[string]string // table.fields
	Steps    []string          // table.steps, a row's cells joined by " | "
}

// alertDetail reads the detail panel.
func alertDetail(t testing.TB, ctx context.Context) detailView {
	t.Helper()
	return eval[detailView](t, ctx, `(() => {
		const p = document.getElementById('alert-detail');
		const fields = {};
		for (const r of p.querySelectorAll('table.fields tr')) fields[r.cells[0].textContent] = r.cells[1].textContent;
		return {
			ID: p.dataset.id || '', State: p.dataset.state || '', Visible: p.offsetParent !== null,
			Title: p.querySelector('.detail-title').textContent, Text: p.textContent,
			EventIDs: [...p.querySelectorAll('ul.evidence li')].map((li) => li.textContent),
			Fields: fields,
			Steps: [...p.querySelectorAll('table.steps tbody tr')].map((r) => [...r.cells].map((c) => c.textContent).join(' | ')),
		};
	})()`)
}

// screenshot writes a PNG of the whole page (not just the viewport) to path,
// creating its directory.
func screenshot(t testing.TB, ctx context.Context, path string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("taking a screenshot: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
}

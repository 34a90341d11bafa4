package console_test

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/outpost-siem/outpost/aggregator/ingest/syslog"
	"github.com/outpost-siem/outpost/aggregator/pipeline"
	"github.com/outpost-siem/outpost/cmd/outpost/demo"
	"github.com/outpost-siem/outpost/forwarder"
	"github.com/outpost-siem/outpost/forwarder/receiver"
)

var update = flag.Bool("update", false, "write the screenshot of the page on a live pipeline to docs/img/status.png")

// livePipeline runs the whole pipeline (embedded JetStream, Badger, the
// shipped rules, a stand-in SIEM) with its HTTP on 127.0.0.1, sampling
// fast, sources stale after staleAfter.
func livePipeline(t *testing.T, staleAfter time.Duration, tokenFile string) (*pipeline.Pipeline, *receiver.Receiver) {
	t.Helper()
	siem, err := receiver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { siem.Close() })
	cfg := &pipeline.Config{DataDir: t.TempDir()}
	cfg.HTTP = pipeline.HTTPConfig{Listen: "127.0.0.1:0", StaleAfter: staleAfter, SampleEvery: 250 * time.Millisecond, TokenFile: tokenFile}
	cfg.Ingest.Syslog = syslog.Config{UDP: []string{"127.0.0.1:0"}, TCP: []string{"127.0.0.1:0"}}
	cfg.Forwarder = forwarder.Config{Hostname: "outpost-console", Destinations: []forwarder.Destination{{Name: "siem", Address: siem.Addr().String()}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.Open(context.Background(), cfg, "console-test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return p, siem
}

// TestPageOnALivePipeline: the page, in headless Chromium, against the
// running pipeline fed with the demo's traffic: the charts have data
// points, the latest alerts are the demo's, an alert opens with its
// evidence, and the sources go stale once their sender stops; no console
// error all along.
func TestPageOnALivePipeline(t *testing.T) {
	ctx := newBrowser(t)
	p, siem := livePipeline(t, 3*time.Second, "")
	udp, tcp := p.SyslogAddrs()
	sent := time.Now()
	if err := demo.Send(context.Background(), 2000, udp[0].String(), tcp[0].String()); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := siem.Wait(wctx, demo.ExpectedAlerts); err != nil {
		t.Fatalf("the demo's alerts did not reach the SIEM: %v", err)
	}
	url := "http://" + p.HTTPAddr().String() + "/"

	loadPage(t, ctx, url)
	// Fresh: no source is stale yet (the traffic is seconds old).
	if time.Since(sent) < 2*time.Second && strings.Contains(text(t, ctx, "#sources"), "stale") {
		t.Errorf("a source is stale right after its traffic:\n%s", text(t, ctx, "#sources"))
	}
	// The charts: wait for a few samples after the traffic.
	var charts map[string]chartView
	waitFor(t, "the charts to have data points", func() bool {
		_ = chromedp.Do(ctx, chromedp.Reload())
		openPage(t, ctx, url)
		charts = chartPoints(t, ctx)
		return charts["events_in"].Points >= 3 && charts["link"].Points >= 3
	})
	for _, name := range []string{"events_in", "bytes_in_by", "link", "alerts"} {
		if charts[name].Points == 0 {
			t.Errorf("chart %s has no data points: %+v", name, charts[name])
		}
	}
	for line, n := range charts["events_in"].Lines {
		if n == 0 {
			t.Errorf("events_in line %s drew no points", line)
		}
	}

	// The latest alerts are the demo's, and one opens with its evidence.
	rows := alertRows(t, ctx)
	if len(rows) < demo.ExpectedAlerts {
		t.Fatalf("%d alert rows, want the demo's %d: %+v", len(rows), demo.ExpectedAlerts, rows)
	}
	rules := map[string]bool{}
	for _, r := range rows {
		rules[r.Rule] = true
	}
	for _, want := range []string{"ssh-brute-force", "ssh-root-logon"} {
		if !rules[want] {
			t.Errorf("no alert of %s in the list: %+v", want, rows)
		}
	}
	clickAlert(t, ctx, rows[0].ID)
	d := alertDetail(t, ctx)
	if !d.Visible || d.ID != rows[0].ID || len(d.EventIDs) == 0 {
		t.Errorf("the alert's detail: %+v", d)
	}

	// The sender stopped: after stale_after its hosts are flagged.
	waitFor(t, "a source to be flagged stale", func() bool {
		_ = chromedp.Do(ctx, chromedp.Reload())
		openPage(t, ctx, url)
		return eval[int](t, ctx, `document.querySelectorAll('#sources tr.stale').length`) > 0
	})
	if *update {
		screenshot(t, ctx, filepath.Join("..", "..", "docs", "img", "status.png"))
	}
}

// TestPageBehindAToken: with a token file, the page redirects to /login,
// a wrong token is refused, the right one opens the page through its
// session cookie.
func TestPageBehindAToken(t *testing.T) {
	ctx := newBrowser(t)
	tokenFile := filepath.Join(t.TempDir(), "tokens")
	const token = "0123456789abcdef0123456789abcdef-console"
	if err := os.WriteFile(tokenFile, []byte("# operators\n"+token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, _ := livePipeline(t, time.Minute, tokenFile)
	base := "http://" + p.HTTPAddr().String()
	resp, err := http.Get(base + "/api/console")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/api/console without a token: %s", resp.Status)
	}
	signIn := func(tok string) string {
		if err := chromedp.Do(ctx,
			chromedp.Navigate(base+"/"),
			chromedp.WaitVisible(chromedp.CSS(`input[name=token]`)),
			chromedp.SendKeys(chromedp.CSS(`input[name=token]`), tok),
			chromedp.Submit(chromedp.CSS(`form`)),
			chromedp.Sleep(300*time.Millisecond),
		); err != nil {
			t.Fatalf("signing in: %v", err)
		}
		loc, err := chromedp.Run(ctx, chromedp.Location())
		if err != nil {
			t.Fatal(err)
		}
		return loc
	}
	if loc := signIn("not-the-token-not-the-token-not-the-token"); !strings.HasSuffix(loc, "/login") {
		t.Fatalf("a wrong token went to %s", loc)
	}
	if loc := signIn(token); loc != base+"/" {
		t.Fatalf("the right token went to %s", loc)
	}
	if state := openPage(t, ctx, base+"/"); state != "ok" {
		t.Fatalf("signed in, the page is %q", state)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 30s for %s", what)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

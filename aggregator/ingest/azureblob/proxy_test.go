package azureblob

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/bus"
)

// Tests that need Azurite to misbehave on cue: a reverse proxy on
// 127.0.0.1 in front of it, whose hook may answer a request itself
// (throttling) or act before forwarding it (committing a new block list
// between two of the source's requests).

// proxy starts a reverse proxy to Azurite and returns a connection string
// through it. hook sees each request first; when it returns true it has
// answered it. status, when not nil, sees the status of every forwarded
// response.
func (r *rig) proxy(hook func(w http.ResponseWriter, req *http.Request) bool, status func(req *http.Request, code int)) string {
	r.t.Helper()
	target, err := url.Parse(r.endpoint())
	if err != nil {
		r.t.Fatal(err)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: target.Scheme, Host: target.Host})
			pr.Out.Host = target.Host
		},
		ModifyResponse: func(resp *http.Response) error {
			if status != nil {
				status(resp.Request, resp.StatusCode)
			}
			return nil
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if hook != nil && hook(w, req) {
			return
		}
		rp.ServeHTTP(w, req)
	}))
	r.t.Cleanup(srv.Close)
	return strings.Replace(r.conn, "BlobEndpoint="+target.Scheme+"://"+target.Host, "BlobEndpoint="+srv.URL, 1)
}

// isRangeRead tells the source's ranged blob downloads from its listings,
// properties and block-list requests.
func isRangeRead(req *http.Request) bool {
	return req.Method == http.MethodGet && req.Header.Get("x-ms-range") != ""
}

// TestThrottled answers the source's first six blob reads with 503 and 429
// and `Retry-After: 1`, as a storage account over its limits does. The SDK
// waits the second it is told between tries (its own retry delay is cut to
// 10ms here, so the waits can only come from Retry-After); after four
// tries the poll fails and the account backs off; the next poll goes on.
// Every line arrives once.
func TestThrottled(t *testing.T) {
	r := newRig(t)
	const cont = "insights-logs-signinlogs"
	r.createContainer(cont)
	now := time.Now().UTC()
	root := "tenantId=" + tenant + "/"
	cur, prev := hourPath(root, now)+"PT1H.json", hourPath(root, now.Add(-time.Hour))+"PT1H.json"
	line := func(n int) string { return signInLine(n, now, fmt.Sprintf("203.0.113.%d", n), "0") }
	r.appendBlob(cont, prev, line(1))
	r.appendBlob(cont, cur, line(2)+line(3))

	const throttle = 6
	var (
		mu        sync.Mutex
		throttled []time.Time
	)
	conn := r.proxy(func(w http.ResponseWriter, req *http.Request) bool {
		if !isRangeRead(req) {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		if len(throttled) >= throttle {
			return false
		}
		throttled = append(throttled, time.Now())
		code, ecode := http.StatusServiceUnavailable, "ServerBusy"
		if len(throttled)%2 == 0 {
			code, ecode = http.StatusTooManyRequests, "TooManyRequests"
		}
		w.Header().Set("Retry-After", "1")
		w.Header().Set("x-ms-error-code", ecode)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(code)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="utf-8"?><Error><Code>%s</Code><Message>The server is busy.</Message></Error>`, ecode)
		return true
	}, nil)
	r.tune = func(s *Source) { s.retry.RetryDelay = 10 * time.Millisecond }
	cfg := r.config(Container{Name: cont, Prefixes: []string{root}})
	cfg.Concurrency = 1 // one read at a time: the throttled tries are in sequence
	cfg.Accounts[0].ConnectionString = Secret{Value: conn}
	stop := r.start(cfg)
	r.waitCount(bus.StreamEvents, 3)
	r.appendBlob(cont, cur, line(4))
	r.appendBlob(cont, prev, line(5))
	r.waitCount(bus.StreamEvents, 5)
	if n := r.metric("outpost_azure_blob_polls_total", "result", "error"); n < 1 {
		t.Errorf("%v failed polls, want at least 1 (four throttled tries in a row)", n)
	}
	if n := r.metric("outpost_component_errors_total", "component", SourceName, "error_type", "read"); n < 1 {
		t.Errorf("%v read errors, want at least 1", n)
	}
	stop()

	mu.Lock()
	defer mu.Unlock()
	if len(throttled) != throttle {
		t.Fatalf("%d reads throttled, want %d", len(throttled), throttle)
	}
	// Tries 1-4 are one poll's (three waits of Retry-After), 5-6 the next
	// poll's (one wait). Between polls the wait is poll_interval.
	waited := 0
	for i := 1; i < len(throttled); i++ {
		gap := throttled[i].Sub(throttled[i-1])
		if gap >= 900*time.Millisecond {
			waited++
		}
		if gap < 90*time.Millisecond {
			t.Errorf("throttled try %d came %v after the previous one", i+1, gap)
		}
	}
	if waited < 4 {
		t.Errorf("%d of the waits between throttled tries honoured Retry-After: 1s, want 4: %v", waited, throttled)
	}

	seen := make(map[string]int)
	for _, ev := range r.events() {
		seen[ev.Attrs["signin_id"]]++
	}
	for n := 1; n <= 5; n++ {
		if id := fmt.Sprintf("signin-%03d", n); seen[id] != 1 {
			t.Errorf("%s arrived %d times, want once", id, seen[id])
		}
	}
}

// TestFlowBlobChangedDuringRead commits a new block list (a new record
// block, as Network Watcher does every minute) at the moment the source
// sent its block-list request, or its first ranged read: both are
// conditional on the ETag of the properties the source read just before,
// so Azurite answers 412 where it checks the condition, and the source
// reads the blob again from its checkpoint. Every tuple arrives once.
func TestFlowBlobChangedDuringRead(t *testing.T) {
	for _, tc := range []struct {
		name  string
		match func(req *http.Request) bool
	}{
		{"before the block list", func(req *http.Request) bool {
			return req.Method == http.MethodGet && req.URL.Query().Get("comp") == "blocklist"
		}},
		{"before the range read", isRangeRead},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			const cont = "insights-logs-networksecuritygroupflowevent"
			r.createContainer(cont)
			now := time.Now().UTC().Truncate(time.Second)
			name := hourPath(nsgRoot, now) + "macAddress=000D3A1B2C3D/PT1H.json"
			tuple := func(n int) string {
				return fmt.Sprintf("%d,203.0.113.%d,10.50.0.4,%d,22,T,I,D,B,,,,", now.Unix()+int64(n), n, 40000+n)
			}
			fb := r.newFlowBlob(cont, name)
			fb.add(nsgRecord(now, tuple(1), tuple(2)))
			fb.add(nsgRecord(now, tuple(3)))

			var (
				fired     atomic.Bool
				failed    atomic.Int32
				hookErr   atomic.Value
				committed = make(chan struct{})
			)
			conn := r.proxy(func(w http.ResponseWriter, req *http.Request) bool {
				if !strings.HasSuffix(req.URL.Path, "/PT1H.json") || !tc.match(req) || !fired.CompareAndSwap(false, true) {
					return false
				}
				// The source holds the ETag of the blob before this commit.
				if err := fb.tryAdd(nsgRecord(now, tuple(4))); err != nil {
					hookErr.Store(err)
				}
				close(committed)
				return false
			}, func(req *http.Request, code int) {
				if code == http.StatusPreconditionFailed {
					failed.Add(1)
				}
			})
			cfg := r.config(Container{Name: cont, Prefixes: []string{nsgRoot}})
			cfg.Accounts[0].ConnectionString = Secret{Value: conn}
			stop := r.start(cfg)
			select {
			case <-committed:
			case <-time.After(20 * time.Second):
				t.Fatal("the source never sent the request to interfere with")
			}
			if err, _ := hookErr.Load().(error); err != nil {
				t.Fatal(err)
			}
			r.waitCount(bus.StreamEvents, 4)
			fb.add(nsgRecord(now, tuple(5)))
			r.waitCount(bus.StreamEvents, 5)
			stop()
			if failed.Load() < 1 {
				t.Errorf("Azurite never answered 412: the interference did not happen")
			}

			seen := make(map[int]int)
			for _, ev := range r.events() {
				var n int
				fmt.Sscanf(ev.SrcIP, "203.0.113.%d", &n)
				seen[n]++
			}
			for n := 1; n <= 5; n++ {
				if seen[n] != 1 {
					t.Errorf("tuple %d arrived %d times, want once", n, seen[n])
				}
			}
			if n := r.metric("outpost_component_errors_total", "component", SourceName, "error_type", "read"); n != 0 {
				t.Errorf("%v read errors: a 412 is not a read error", n)
			}
		})
	}
}

package pipeline

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/outpost-siem/outpost/aggregator/console"
)

// httpServer serves the status page (/, /api/console), /metrics, /healthz
// (the process is up), /readyz (the pipeline can make progress: connected
// to NATS), /status (the link economy as JSON) and /alerts/{id}.
type httpServer struct {
	ln  net.Listener
	srv *http.Server
}

// listenHTTP opens http.listen: the status page, /api/console, /status,
// /alerts/{id}, /metrics, the health checks, and the profiler if
// http.pprof. With auth configured every path but the health checks and
// /login needs it.
func (p *Pipeline) listenHTTP() (*httpServer, error) {
	cfg := p.cfg.HTTP
	for _, c := range []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := p.reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering the runtime metrics: %w", err)
		}
	}
	auth, tc, err := newHTTPAuth(cfg)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.reg, promhttp.HandlerOpts{Registry: p.reg}))
	mux.HandleFunc("GET /status", p.serveStatus)
	mux.HandleFunc("GET /api/console", p.serveConsole)
	mux.HandleFunc("GET /alerts/{id}", p.serveAlert)
	page := console.Handler()
	mux.Handle("GET /{$}", page)
	mux.Handle("GET /assets/", page)
	mux.HandleFunc("/login", auth.serveLogin)
	if cfg.PProf {
		// Go's profiler, for `go tool pprof http://ADDR/debug/pprof/profile`.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		err, degraded := p.ready()
		// The reasons name accounts, paths and addresses: only for who
		// may see the rest.
		detail := auth == nil || auth.allowed(r)
		switch {
		case err != nil && detail:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		case err != nil:
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		case len(degraded) > 0 && detail:
			fmt.Fprintf(w, "ready, degraded: %v\n", errors.Join(degraded...))
		case len(degraded) > 0:
			fmt.Fprintln(w, "ready, degraded")
		default:
			fmt.Fprintln(w, "ready")
		}
	})
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listening for http on %s: %w", cfg.Listen, err)
	}
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	return &httpServer{ln: ln, srv: &http.Server{Handler: auth.wrap(mux), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10, TLSConfig: tc}}, nil
}

func (h *httpServer) addr() net.Addr { return h.ln.Addr() }

func (h *httpServer) run(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = h.srv.Shutdown(sctx)
	}()
	if err := h.srv.Serve(h.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (h *httpServer) close() { _ = h.srv.Close() }

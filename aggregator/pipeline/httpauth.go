package pipeline

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/outpost-siem/outpost/aggregator/config"
	"github.com/outpost-siem/outpost/aggregator/ingest/syslog"
)

// HTTPConfig is the `http` section: the status page, metrics, health and
// alert endpoints.
type HTTPConfig struct {
	// Listen is where they are served; default 127.0.0.1:9464. "off"
	// disables the endpoint. An address off loopback needs tls and one of
	// token_file or tls.client_ca_file.
	Listen string `yaml:"listen"`
	// TokenFile holds bearer tokens, one per line (blank lines and # lines
	// ignored), each at least 32 characters; the file must not be readable
	// by other users. A request carries one as "Authorization: Bearer T",
	// or the page's session cookie after /login.
	TokenFile string `yaml:"token_file"`
	// TLS serves HTTPS; with client_ca_file, a client certificate from
	// that CA is authentication too.
	TLS HTTPTLS `yaml:"tls"`
	// PProf serves Go's profiler under /debug/pprof/ (authenticated like
	// the rest). Default false: 404.
	PProf bool `yaml:"pprof"`
	// StaleAfter flags a source host on the status page that has sent
	// nothing for this long. Default 15m.
	StaleAfter time.Duration `yaml:"stale_after"`
	// SampleEvery is how often the status page's charts take a sample (an
	// hour of them is kept). Default 5s; at least 100ms.
	SampleEvery time.Duration `yaml:"sample_every"`
}

// HTTPTLS is http.tls.
type HTTPTLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
	// ClientNames, when set, lets in by certificate only the clients whose
	// certificate names one of these in a DNS SAN (or, if it has none, its
	// CN), as ingest.syslog.tls's client_names. Needs client_ca_file.
	ClientNames []string `yaml:"client_names"`
}

// minTokenLen keeps tokens out of guessing range.
const minTokenLen = 32

// validate applies defaults and adds problems to errs.
func (h *HTTPConfig) validate(errs *config.Errors) {
	if h.StaleAfter == 0 {
		h.StaleAfter = 15 * time.Minute
	}
	if h.StaleAfter < 0 {
		errs.Add("http.stale_after", "must be positive, got %s", h.StaleAfter)
	}
	if h.SampleEvery == 0 {
		h.SampleEvery = 5 * time.Second
	}
	if h.SampleEvery < 100*time.Millisecond {
		errs.Add("http.sample_every", "must be at least 100ms, got %s", h.SampleEvery)
	}
	switch h.Listen {
	case "":
		h.Listen = "127.0.0.1:9464"
	case "off":
		return
	}
	host, _, err := net.SplitHostPort(h.Listen)
	if err != nil {
		errs.Add("http.listen", "%q is not host:port or off: %v", h.Listen, err)
		return
	}
	if (h.TLS.CertFile == "") != (h.TLS.KeyFile == "") {
		errs.Add("http.tls", "cert_file and key_file go together")
	}
	if len(h.TLS.ClientNames) > 0 && h.TLS.ClientCAFile == "" {
		errs.Add("http.tls.client_names", "needs client_ca_file: names are checked on certificates verified against it")
	}
	if h.TLS.ClientCAFile != "" && h.TLS.CertFile == "" {
		errs.Add("http.tls.client_ca_file", "needs cert_file and key_file: client certificates are asked for over TLS")
	}
	if IsLoopbackHost(host) {
		return
	}
	if h.TLS.CertFile == "" || (h.TokenFile == "" && h.TLS.ClientCAFile == "") {
		errs.Add("http.listen", "%q is not loopback: the status page, alerts and metrics would be open to the network; "+
			"set http.tls (cert_file, key_file) and http.token_file or http.tls.client_ca_file, or listen on 127.0.0.1", h.Listen)
	}
}

// IsLoopbackHost says whether a host (of a listen address, a URL or a Host
// header) is loopback only ("" and 0.0.0.0 are every interface).
func IsLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// httpAuth is what a request must show. nil: nothing (loopback, and no
// auth configured); then only loopback Host names are served.
type httpAuth struct {
	tokens    [][32]byte // sha256 of each token: compared in constant time
	certs     bool       // a verified client certificate is enough
	certNames []string   // ... if it names one of these (when set)
	secure    bool       // served over TLS: the session cookie is Secure

	mu       sync.Mutex
	sessions map[string]session           // by the cookie's random id
	failures map[netip.Addr]*rate.Limiter // failed authentications per client address
}

// session is a browser's sign-in: which token made it, until when.
type session struct {
	token   [32]byte
	expires time.Time
}

const (
	sessionTTL  = 12 * time.Hour
	maxSessions = 1024
	// A client address may fail authentication failBurst times, then once
	// a second; beyond that it is answered 429 without a check.
	failBurst    = 10
	maxFailAddrs = 10000
)

// loadTokens reads a token file; it refuses one others can read.
func loadTokens(file string) ([][32]byte, error) {
	st, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("http.token_file: %w", err)
	}
	if st.Mode().Perm()&0o004 != 0 {
		return nil, fmt.Errorf("http.token_file %s is readable by every user (mode %s): chmod o-r", file, st.Mode().Perm())
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("http.token_file: %w", err)
	}
	var out [][32]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		if len(t) < minTokenLen {
			return nil, fmt.Errorf("http.token_file %s line %d: a token must be at least %d characters (e.g. `openssl rand -hex 32`)", file, n, minTokenLen)
		}
		out = append(out, sha256.Sum256([]byte(t)))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("http.token_file %s holds no token", file)
	}
	return out, nil
}

// newHTTPAuth builds the auth of cfg and the server's TLS config (nil for
// plain HTTP).
func newHTTPAuth(cfg HTTPConfig) (*httpAuth, *tls.Config, error) {
	var tc *tls.Config
	if cfg.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("http.tls: %w", err)
		}
		tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if cfg.TLS.ClientCAFile != "" {
			pem, err := os.ReadFile(cfg.TLS.ClientCAFile)
			if err != nil {
				return nil, nil, fmt.Errorf("http.tls.client_ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, nil, fmt.Errorf("http.tls.client_ca_file %s: no PEM certificate in it", cfg.TLS.ClientCAFile)
			}
			// Asked for, verified if given: a browser with a token and no
			// certificate may still log in.
			tc.ClientCAs, tc.ClientAuth = pool, tls.VerifyClientCertIfGiven
		}
	}
	if cfg.TokenFile == "" && cfg.TLS.ClientCAFile == "" {
		return nil, tc, nil // loopback (validate refused anything else)
	}
	a := &httpAuth{certs: cfg.TLS.ClientCAFile != "", certNames: cfg.TLS.ClientNames, secure: tc != nil,
		sessions: map[string]session{}, failures: map[netip.Addr]*rate.Limiter{}}
	if cfg.TokenFile != "" {
		var err error
		if a.tokens, err = loadTokens(cfg.TokenFile); err != nil {
			return nil, nil, err
		}
	}
	return a, tc, nil
}

// cookieName is the session cookie's name: with the __Host- prefix over
// TLS, so the browser keeps it to this origin (Secure, Path=/, no Domain).
func (a *httpAuth) cookieName() string {
	if a.secure {
		return "__Host-" + sessionCookie
	}
	return sessionCookie
}

const sessionCookie = "outpost_session"

// credential is what r presents: a bearer token, else a session id.
func (a *httpAuth) credential(r *http.Request) (bearer, sessionID string) {
	if h := r.Header.Get("Authorization"); len(h) >= 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:]), ""
	}
	if c, err := r.Cookie(a.cookieName()); err == nil {
		return "", c.Value
	}
	return "", ""
}

// check says whether r authenticated: "ok", "none" (it presented nothing),
// "bad" (it presented something wrong) or "paced" (its address failed too
// often: not checked).
func (a *httpAuth) check(r *http.Request) string {
	if a.certs && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 &&
		(len(a.certNames) == 0 || syslog.CertNamesAllowed(r.TLS.PeerCertificates[0], a.certNames)) {
		return "ok"
	}
	bearer, sid := a.credential(r)
	if bearer == "" && sid == "" {
		return "none"
	}
	addr := clientAddr(r)
	if !a.mayTry(addr) {
		return "paced"
	}
	ok := false
	if bearer != "" {
		ok = a.tokenOK(bearer)
	} else {
		ok = a.sessionOK(sid)
	}
	if ok {
		return "ok"
	}
	a.failed(addr)
	return "bad"
}

func (a *httpAuth) allowed(r *http.Request) bool { return a.check(r) == "ok" }

func clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// mayTry says whether addr has failures left.
func (a *httpAuth) mayTry(addr netip.Addr) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.failures[addr]
	return l == nil || l.Tokens() >= 1
}

// failed spends one of addr's failures.
func (a *httpAuth) failed(addr netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.failures[addr]
	if l == nil {
		if len(a.failures) >= maxFailAddrs {
			for k := range a.failures { // map order is random
				delete(a.failures, k)
				break
			}
		}
		l = rate.NewLimiter(1, failBurst)
		a.failures[addr] = l
	}
	l.Allow()
}

func (a *httpAuth) tokenOK(tok string) bool {
	sum := sha256.Sum256([]byte(tok))
	return a.knownToken(sum)
}

func (a *httpAuth) knownToken(sum [32]byte) bool {
	ok := 0
	for _, t := range a.tokens { // every one, so timing says nothing of which
		ok |= subtle.ConstantTimeCompare(sum[:], t[:])
	}
	return ok == 1
}

// sessionOK says whether id is a live session of a token still known.
func (a *httpAuth) sessionOK(id string) bool {
	a.mu.Lock()
	s, ok := a.sessions[id]
	if ok && time.Now().After(s.expires) {
		delete(a.sessions, id)
		ok = false
	}
	a.mu.Unlock()
	return ok && a.knownToken(s.token)
}

// newSession makes a session for a token: a random id, kept server side.
func (a *httpAuth) newSession(tok string) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b[:])
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.sessions) >= maxSessions {
		var oldest string
		var at time.Time
		for k, s := range a.sessions {
			if oldest == "" || s.expires.Before(at) {
				oldest, at = k, s.expires
			}
		}
		delete(a.sessions, oldest)
	}
	a.sessions[id] = session{token: sha256.Sum256([]byte(tok)), expires: now.Add(sessionTTL)}
	return id, nil
}

// open are the paths served without authentication.
var openPaths = map[string]bool{"/healthz": true, "/readyz": true, "/login": true}

// wrap puts authentication in front of next. Without auth (loopback) it
// still refuses a Host that is not loopback: a web page that rebinds its
// name to 127.0.0.1 must not read the console.
func (a *httpAuth) wrap(next http.Handler) http.Handler {
	if a == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !loopbackHost(r.Host) {
				http.Error(w, "this endpoint answers to a loopback host name only (127.0.0.1, ::1, localhost)", http.StatusMisdirectedRequest)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if openPaths[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		switch a.check(r) {
		case "ok":
			next.ServeHTTP(w, r)
			return
		case "paced":
			w.Header().Set("Retry-After", "1")
			http.Error(w, "too many failed authentications from this address", http.StatusTooManyRequests)
			return
		}
		if r.URL.Path == "/" && r.Method == http.MethodGet && len(a.tokens) > 0 {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="outpost"`)
		http.Error(w, "authentication required: a bearer token (http.token_file) or a client certificate", http.StatusUnauthorized)
	})
}

// loopbackHost says whether a Host header names loopback.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	return IsLoopbackHost(strings.TrimSuffix(strings.ToLower(host), "."))
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Outpost — sign in</title></head>
<body><main><h1>Outpost</h1>
{{if .}}<p role="alert">{{.}}</p>{{end}}
<form method="post" action="/login">
<label>Token <input type="password" name="token" autocomplete="current-password" required></label>
<button type="submit">Sign in</button>
</form></main></body></html>
`))

// serveLogin shows the sign-in form (GET), checks a token (POST) and makes
// a session for a good one: a random id in an HttpOnly, SameSite=Strict
// cookie (Secure and __Host- over TLS), kept server side for 12 hours and
// only while its token is in the file. POST /login?logout ends it.
func (a *httpAuth) serveLogin(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Security-Policy", "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	w.Header().Set("Cache-Control", "no-store")
	if a == nil || len(a.tokens) == 0 {
		http.Error(w, "no token sign-in here", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodPost {
		_ = loginPage.Execute(w, "")
		return
	}
	if r.URL.Query().Has("logout") {
		if _, sid := a.credential(r); sid != "" {
			a.mu.Lock()
			delete(a.sessions, sid)
			a.mu.Unlock()
		}
		http.SetCookie(w, &http.Cookie{Name: a.cookieName(), Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
			Secure: a.secure, SameSite: http.SameSiteStrictMode})
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	addr := clientAddr(r)
	if !a.mayTry(addr) {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many failed sign-ins from this address", http.StatusTooManyRequests)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	tok := strings.TrimSpace(r.PostFormValue("token"))
	if tok == "" || !a.tokenOK(tok) {
		a.failed(addr)
		w.WriteHeader(http.StatusUnauthorized)
		_ = loginPage.Execute(w, "That token is not valid.")
		return
	}
	id, err := a.newSession(tok)
	if err != nil {
		http.Error(w, "no session: "+err.Error(), http.StatusInternalServerError)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: a.cookieName(), Value: id, Path: "/", HttpOnly: true,
		Secure: a.secure, SameSite: http.SameSiteStrictMode, MaxAge: int(sessionTTL / time.Second)})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

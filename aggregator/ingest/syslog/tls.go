package syslog

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultHandshakeTimeout bounds a TLS handshake on a syslog or RELP
// listener: a client that does not finish it by then is closed and counted.
const DefaultHandshakeTimeout = 10 * time.Second

// TLSFiles is the TLS side of a listener: the server's certificate and
// key, and optionally the CA that client certificates must chain to.
type TLSFiles struct {
	// CertFile and KeyFile are PEM files: the server certificate (with its
	// intermediates after it) and its private key. Both required.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// MinVersion is the lowest TLS version accepted: "1.2" (default) or
	// "1.3".
	MinVersion string `yaml:"min_version"`
	// ClientCAFile, when set, makes the listener ask every client for a
	// certificate and refuse one that does not chain to a CA in this PEM
	// file (mutual TLS).
	ClientCAFile string `yaml:"client_ca_file"`
	// ClientNames, when set, admits only clients whose certificate names
	// one of these in a DNS subject alternative name, or, if it has none,
	// in its subject common name (ASCII case ignored). Needs client_ca_file.
	ClientNames []string `yaml:"client_names"`
}

// TLSListener is one entry of `ingest.syslog.tls`: syslog over TLS
// (RFC 5425: octet-counted frames; LF-framed ones are read too, as on TCP).
type TLSListener struct {
	Listen   string `yaml:"listen"` // e.g. "0.0.0.0:6514"
	TLSFiles `yaml:",inline"`
}

func (f *TLSFiles) validate(errs interface {
	Add(key, format string, args ...any)
}, key string) {
	if f.CertFile == "" {
		errs.Add(key+".cert_file", "required: the server certificate (PEM)")
	}
	if f.KeyFile == "" {
		errs.Add(key+".key_file", "required: the server certificate's private key (PEM)")
	}
	switch f.MinVersion {
	case "", "1.2", "1.3":
	default:
		errs.Add(key+".min_version", "must be \"1.2\" or \"1.3\", got %q", f.MinVersion)
	}
	if len(f.ClientNames) > 0 && f.ClientCAFile == "" {
		errs.Add(key+".client_names", "needs client_ca_file: names are checked on certificates verified against it")
	}
	for i, n := range f.ClientNames {
		if strings.TrimSpace(n) == "" {
			errs.Add(fmt.Sprintf("%s.client_names[%d]", key, i), "empty name")
		}
	}
}

// Reasons a TLS handshake failed: the values of the reason label of
// outpost_syslog_tls_handshake_errors_total.
const (
	tlsTimeout       = "timeout"               // not finished within handshake_timeout
	tlsNotTLS        = "not_tls"               // the client spoke something else (plain syslog)
	tlsNoClientCert  = "no_client_certificate" // mutual TLS, and the client sent none
	tlsUnknownCA     = "unknown_ca"            // the client's certificate does not chain to client_ca_file
	tlsExpired       = "expired_certificate"   // the client's certificate is expired or not yet valid
	tlsBadCert       = "bad_certificate"       // the client's certificate is invalid otherwise
	tlsNotAllowed    = "client_not_allowed"    // verified, but its names are not in client_names
	tlsVersion       = "protocol_version"      // no TLS version or cipher suite in common
	tlsRemoteRefused = "remote_alert"          // the client refused the handshake (e.g. it does not trust our certificate)
	tlsOther         = "other"
)

var tlsReasons = []string{tlsTimeout, tlsNotTLS, tlsNoClientCert, tlsUnknownCA, tlsExpired, tlsBadCert,
	tlsNotAllowed, tlsVersion, tlsRemoteRefused, tlsOther}

// errClientNotAllowed is returned by the name check of client_names.
var errClientNotAllowed = errors.New("client certificate names none of client_names")

// handshakeReason classifies a failed server handshake.
func handshakeReason(err error) string {
	var (
		rh   tls.RecordHeaderError
		cve  *tls.CertificateVerificationError
		ua   x509.UnknownAuthorityError
		ci   x509.CertificateInvalidError
		oe   *net.OpError
		nerr net.Error
	)
	switch {
	case errors.Is(err, errClientNotAllowed):
		return tlsNotAllowed
	case errors.As(err, &rh):
		return tlsNotTLS
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return tlsExpired
	case errors.As(err, &ua):
		return tlsUnknownCA
	case errors.As(err, &cve), errors.As(err, &ci):
		return tlsBadCert
	case errors.As(err, &oe) && oe.Op == "remote error":
		return tlsRemoteRefused
	case errors.As(err, &nerr) && nerr.Timeout():
		return tlsTimeout
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "didn't provide a certificate"):
		return tlsNoClientCert
	case strings.Contains(msg, "unsupported versions"), strings.Contains(msg, "no cipher suite"),
		strings.Contains(msg, "protocol version"):
		return tlsVersion
	}
	return tlsOther
}

// tlsServer is the TLS of one listener: the files it was configured with
// and the tls.Config built from them, swapped whole on a reload, so a new
// connection uses the files as they are and an established one keeps
// what it was made with.
type tlsServer struct {
	listen string
	files  TLSFiles
	cur    atomic.Pointer[tls.Config]
	sum    [32]byte // of the files last loaded, to tell a change
	expiry prometheus.Gauge
}

// loadTLS reads the files of f into a server tls.Config. It is what
// check-config checks and what a reload does.
func loadTLS(f TLSFiles) (*tls.Config, *x509.Certificate, [32]byte, error) {
	var sum [32]byte
	certPEM, err := os.ReadFile(f.CertFile)
	if err != nil {
		return nil, nil, sum, fmt.Errorf("reading cert_file: %w", err)
	}
	keyPEM, err := os.ReadFile(f.KeyFile)
	if err != nil {
		return nil, nil, sum, fmt.Errorf("reading key_file: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, sum, fmt.Errorf("cert_file %s and key_file %s: %w", f.CertFile, f.KeyFile, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, nil, sum, fmt.Errorf("cert_file %s: %w", f.CertFile, err)
		}
	}
	h := sha256.New()
	h.Write(certPEM)
	h.Write(keyPEM)
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.MinVersion == "1.3" {
		c.MinVersion = tls.VersionTLS13
	}
	if f.ClientCAFile != "" {
		caPEM, err := os.ReadFile(f.ClientCAFile)
		if err != nil {
			return nil, nil, sum, fmt.Errorf("reading client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, nil, sum, fmt.Errorf("client_ca_file %s: no PEM certificate in it", f.ClientCAFile)
		}
		h.Write(caPEM)
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if names := f.ClientNames; len(names) > 0 {
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !namesAllowed(cs.PeerCertificates[0], names) {
				return errClientNotAllowed
			}
			return nil
		}
	}
	copy(sum[:], h.Sum(nil))
	return c, leaf, sum, nil
}

// namesAllowed says whether the certificate names one of names: in a DNS
// subject alternative name, or, only when it has none, in its subject
// common name (RFC 6125 §6.4.4). Names compare without regard to ASCII
// case; a name with any other byte is never matched (Unicode folding
// would take the Kelvin sign for a k).
func namesAllowed(c *x509.Certificate, names []string) bool {
	has := func(n string) bool {
		return slices.ContainsFunc(names, func(a string) bool { return asciiEqualFold(a, n) })
	}
	if len(c.DNSNames) > 0 {
		return slices.ContainsFunc(c.DNSNames, has)
	}
	return c.Subject.CommonName != "" && has(c.Subject.CommonName)
}

// CertNamesAllowed is namesAllowed for other listeners (the HTTP endpoint's
// client certificates).
func CertNamesAllowed(c *x509.Certificate, names []string) bool { return namesAllowed(c, names) }

// asciiEqualFold compares two ASCII strings without regard to case; false
// if either holds a byte outside ASCII.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x >= 0x80 || y >= 0x80 {
			return false
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// usable says why no client would accept leaf as a server certificate
// now: not valid yet, expired, or made for something else than a server.
func usable(leaf *x509.Certificate, now time.Time) error {
	switch {
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("the certificate is not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339))
	case now.After(leaf.NotAfter):
		return fmt.Errorf("the certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	case len(leaf.ExtKeyUsage) > 0 && !slices.ContainsFunc(leaf.ExtKeyUsage, func(u x509.ExtKeyUsage) bool {
		return u == x509.ExtKeyUsageServerAuth || u == x509.ExtKeyUsageAny
	}):
		return errors.New("the certificate's extended key usage does not include serverAuth: clients refuse it as a server certificate")
	}
	return nil
}

// caUsable says why a client CA file would refuse every client: each of
// its certificates is expired or not valid yet.
func caUsable(file string, now time.Time) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	valid, n := 0, 0
	for len(data) > 0 {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if b.Type != "CERTIFICATE" || err != nil {
			continue
		}
		n++
		if !now.Before(c.NotBefore) && !now.After(c.NotAfter) {
			valid++
		}
	}
	if n > 0 && valid == 0 {
		return fmt.Errorf("client_ca_file %s: every CA certificate in it is expired or not valid yet: every client would be refused", file)
	}
	return nil
}

// load reads the files again; on an error the running config stays. It
// says whether anything changed. A reload also refuses files no client
// could use (an expired certificate renamed into place must not replace a
// good one); at start they are taken, and logged.
func (s *tlsServer) load() (bool, *x509.Certificate, error) {
	c, leaf, sum, err := loadTLS(s.files)
	if err != nil {
		return false, nil, err
	}
	if s.cur.Load() != nil && sum == s.sum {
		return false, leaf, nil
	}
	if s.cur.Load() != nil {
		if err := usable(leaf, time.Now()); err != nil {
			return false, nil, fmt.Errorf("cert_file %s: %w", s.files.CertFile, err)
		}
		if s.files.ClientCAFile != "" {
			if err := caUsable(s.files.ClientCAFile, time.Now()); err != nil {
				return false, nil, err
			}
		}
	}
	s.sum = sum
	s.cur.Store(c)
	if s.expiry != nil {
		s.expiry.Set(float64(leaf.NotAfter.Unix()))
	}
	return true, leaf, nil
}

// config is what tls.Server is given: every handshake takes the config of
// the moment.
func (s *tlsServer) config() *tls.Config {
	return &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return s.cur.Load(), nil
	}}
}

// tlsSet is the TLS listeners of a source, reloaded together.
type tlsSet struct {
	mu      sync.Mutex // one reload at a time
	servers []*tlsServer
}

// reload reloads every listener's files and logs what changed; it returns
// the first error (the listener it names keeps its running config).
func (s *Source) reloadTLS(why string) error {
	s.tls.mu.Lock()
	defer s.tls.mu.Unlock()
	var first error
	for _, srv := range s.tls.servers {
		changed, leaf, err := srv.load()
		switch {
		case err != nil:
			s.m.tlsReloads.WithLabelValues("error").Inc()
			s.log.Warn("TLS files not reloaded: the listener keeps its certificate", "listener", srv.listen, "trigger", why, "err", err)
			if first == nil {
				first = fmt.Errorf("listener %s: %w", srv.listen, err)
			}
		case changed:
			s.m.tlsReloads.WithLabelValues("ok").Inc()
			s.log.Info("TLS files reloaded: new connections use them", "listener", srv.listen, "trigger", why,
				"subject", leaf.Subject.String(), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
			warnExpiry(s, srv.listen, leaf)
		}
	}
	return first
}

// ReloadTLS reads the certificate, key and CA files of the TLS listeners
// again (SIGHUP does it, and so does a change to the files). New
// connections use them; established ones keep theirs. A listener whose
// files do not load keeps the ones it has, and the error names it.
func (s *Source) ReloadTLS() error { return s.reloadTLS("reload") }

// warnExpiry logs a certificate that has expired or expires within 30 days.
func warnExpiry(s *Source, listen string, leaf *x509.Certificate) {
	left := time.Until(leaf.NotAfter)
	switch {
	case left <= 0:
		s.log.Error("the TLS listener's certificate has expired: clients will refuse it", "listener", listen,
			"not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	case left < 30*24*time.Hour:
		s.log.Warn("the TLS listener's certificate expires soon", "listener", listen,
			"not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
}

// watchTLS reloads the TLS files when one of them changes on disk, until
// done is closed. It watches the files' directories, not the files: a
// renewal usually writes a new file and renames it over the old one (or,
// in Kubernetes, swaps a symlink), which a watch on the file would miss.
// Events come in bursts (cert then key): a reload comes 250 ms after the
// first event for one of the files, and a pair read mid-write fails to
// load, is logged, and the next event loads it.
func (s *Source) watchTLS(done <-chan struct{}) {
	dirs := map[string]bool{}
	for _, srv := range s.tls.servers {
		for _, f := range []string{srv.files.CertFile, srv.files.KeyFile, srv.files.ClientCAFile} {
			if f != "" {
				dirs[filepath.Dir(f)] = true
			}
		}
	}
	if len(dirs) == 0 {
		return
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Warn("TLS files are not watched for changes: reload with SIGHUP", "err", err)
		return
	}
	defer w.Close()
	for d := range dirs {
		if err := w.Add(d); err != nil {
			s.log.Warn("TLS files are not watched for changes: reload with SIGHUP", "dir", d, "err", err)
		}
	}
	watched := map[string]bool{}
	for _, srv := range s.tls.servers {
		for _, f := range []string{srv.files.CertFile, srv.files.KeyFile, srv.files.ClientCAFile} {
			if f != "" {
				watched[filepath.Base(f)] = true
			}
		}
	}
	var quiet <-chan time.Time
	for {
		select {
		case <-done:
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			// Only the files (and Kubernetes' ..data symlink swap); a
			// reload comes 250 ms after the first event, however busy
			// the directory is.
			base := filepath.Base(ev.Name)
			if (watched[base] || strings.HasPrefix(base, "..")) && quiet == nil {
				quiet = time.After(250 * time.Millisecond)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			s.log.Warn("watching the TLS files", "err", err)
		case <-quiet:
			quiet = nil
			_ = s.reloadTLS("file change") // logged and counted there
		}
	}
}

// CheckTLSFiles loads f as a listener would and returns the certificate it
// would serve: check-config's check of the TLS material. err: the files do
// not load (unreadable, unparsable, a key that is not the certificate's),
// and the listener would not start. unusable: they load, but no client
// would connect (a certificate expired, not valid yet or not a server
// certificate, or a client CA file with no valid certificate).
func CheckTLSFiles(f TLSFiles) (leaf *x509.Certificate, unusable, err error) {
	_, leaf, _, err = loadTLS(f)
	if err != nil {
		return nil, nil, err
	}
	if err := usable(leaf, time.Now()); err != nil {
		return leaf, fmt.Errorf("cert_file %s: %w", f.CertFile, err), nil
	}
	if f.ClientCAFile != "" {
		if err := caUsable(f.ClientCAFile, time.Now()); err != nil {
			return leaf, err, nil
		}
	}
	return leaf, nil, nil
}

package pipeline

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/outpost-siem/outpost/aggregator/ingest/syslog"
)

// Status of one deployment check.
const (
	CheckOK   = "ok"   // checked, fine
	CheckFail = "fail" // checked, and Outpost would not start (or not work) like this
	CheckWarn = "warn" // checked, a problem that does not stop Outpost (it retries)
	CheckSkip = "skip" // could not be checked from here; Detail says why
)

// Check is one thing check-config verified about what the deployment gives
// Outpost: files, the data dir, listen addresses, names to resolve.
type Check struct {
	Status string
	What   string // e.g. "ingest.syslog.tls[0]: /etc/outpost/tls/syslog.pem"
	Detail string
}

func (c Check) String() string { return fmt.Sprintf("%-4s  %s: %s", c.Status, c.What, c.Detail) }

// resolveTimeout bounds each name lookup of CheckDeployment.
const resolveTimeout = 3 * time.Second

// CheckDeployment checks, as the user it runs as, what the config needs of
// the machine: that the files it names exist and are readable (TLS material
// also parses and its key matches the certificate), that data_dir is
// writable, that every listen address can be bound, and that every name it
// connects to resolves. It binds and closes the addresses at once, so run
// it before Outpost starts (systemd's ExecStartPre does); an address
// already in use is a warning, as it is when Outpost itself holds it.
func CheckDeployment(ctx context.Context, cfg *Config) []Check {
	var out []Check
	add := func(status, what, format string, args ...any) {
		out = append(out, Check{status, what, fmt.Sprintf(format, args...)})
	}

	u, err := user.Current()
	switch {
	case err != nil:
		add(CheckSkip, "user", "unknown (%v): file access is checked as whoever this is", err)
	case u.Uid == "0":
		add(CheckSkip, "user", "running as root, which reads every file: run it as the service user "+
			"(sudo -u outpost outpost check-config -c FILE) to check that user's access")
	default:
		add(CheckOK, "user", "file access checked as %s (uid %s)", u.Username, u.Uid)
	}

	out = append(out, checkDataDir(cfg.DataDir))

	sl := cfg.Ingest.Syslog
	serverTLS := func(key string, f syslog.TLSFiles) {
		leaf, unusable, err := syslog.CheckTLSFiles(f)
		if err != nil {
			add(CheckFail, key, "%v", err)
			return
		}
		if unusable != nil {
			// Outpost starts (its other listeners work), but no client
			// will connect to this one.
			add(CheckWarn, key, "%v — no client will connect to this listener", unusable)
			return
		}
		status, note := CheckOK, ""
		if left := time.Until(leaf.NotAfter); left < 30*24*time.Hour {
			status, note = CheckWarn, " — expires in less than 30 days"
		}
		add(status, key, "%s and its key load; serves %q until %s%s", f.CertFile, leaf.Subject.CommonName,
			leaf.NotAfter.UTC().Format(time.DateOnly), note)
		out = append(out, keyModeCheck(key+".key_file", f.KeyFile)...)
	}
	for i, l := range sl.TLS {
		serverTLS(fmt.Sprintf("ingest.syslog.tls[%d]", i), l.TLSFiles)
	}
	for i, l := range sl.RELP {
		if l.TLS != nil {
			serverTLS(fmt.Sprintf("ingest.syslog.relp[%d].tls", i), *l.TLS)
		}
	}
	if h := cfg.HTTP; h.Listen != "off" {
		if h.TLS.CertFile != "" {
			out = append(out, checkPair("http.tls", h.TLS.CertFile, h.TLS.KeyFile)...)
		}
		if h.TLS.ClientCAFile != "" {
			out = append(out, checkCA("http.tls.client_ca_file", h.TLS.ClientCAFile))
		}
		if h.TokenFile != "" {
			if toks, err := loadTokens(h.TokenFile); err != nil {
				add(CheckFail, "http.token_file", "%v", err)
			} else {
				add(CheckOK, "http.token_file", "%s holds %d token(s)", h.TokenFile, len(toks))
			}
		}
	}
	if t := cfg.NATS.TLS; t.CertFile != "" {
		out = append(out, checkPair("nats.tls", t.CertFile, t.KeyFile)...)
	}
	if f := cfg.NATS.TLS.ClientCAFile; f != "" {
		out = append(out, checkCA("nats.tls.client_ca_file", f))
	}
	if f := cfg.NATS.CredsFile; f != "" {
		out = append(out, checkReadable("nats.creds_file", f))
	}
	for i, d := range cfg.Forwarder.Destinations {
		key := fmt.Sprintf("forwarder.destinations[%d]", i)
		if d.TLS.CAFile != "" {
			out = append(out, checkCA(key+".tls.ca_file", d.TLS.CAFile))
		}
		if d.TLS.CertFile != "" {
			out = append(out, checkPair(key+".tls", d.TLS.CertFile, d.TLS.KeyFile)...)
		}
	}
	for i, a := range cfg.Ingest.AzureBlob.Accounts {
		key := fmt.Sprintf("ingest.azure_blob.accounts[%d]", i)
		for name, f := range map[string]string{"connection_string": a.ConnectionString.File, "account_key": a.AccountKey.File, "sas": a.SAS.File} {
			if f != "" {
				out = append(out, checkReadable(key+"."+name+".file", f))
			}
		}
	}

	for i, a := range sl.UDP {
		out = append(out, checkBind(fmt.Sprintf("ingest.syslog.udp[%d]", i), "udp", a))
	}
	for i, a := range sl.TCP {
		out = append(out, checkBind(fmt.Sprintf("ingest.syslog.tcp[%d]", i), "tcp", a))
	}
	for i, l := range sl.TLS {
		out = append(out, checkBind(fmt.Sprintf("ingest.syslog.tls[%d].listen", i), "tcp", l.Listen))
	}
	for i, l := range sl.RELP {
		out = append(out, checkBind(fmt.Sprintf("ingest.syslog.relp[%d].listen", i), "tcp", l.Listen))
	}
	if cfg.HTTP.Listen != "off" {
		out = append(out, checkBind("http.listen", "tcp", cfg.HTTP.Listen))
	}
	if cfg.NATS.Listen != "" && cfg.NATS.URL == "" {
		out = append(out, checkBind("nats.listen", "tcp", cfg.NATS.Listen))
	}

	for i, d := range cfg.Forwarder.Destinations {
		host, _, _ := net.SplitHostPort(d.Address)
		out = append(out, checkResolve(ctx, fmt.Sprintf("forwarder.destinations[%d].address", i), host,
			"alerts wait in JetStream and the forwarder retries"))
	}
	for i, a := range cfg.Ingest.AzureBlob.Accounts {
		if u, err := url.Parse(a.URL); err == nil && u.Hostname() != "" {
			out = append(out, checkResolve(ctx, fmt.Sprintf("ingest.azure_blob.accounts[%d].url", i), u.Hostname(),
				"the source retries with backoff"))
		}
	}
	return out
}

// checkDataDir checks that data_dir is writable, or, if it does not exist
// yet, that its nearest existing parent is (Outpost creates it). It writes
// nothing.
func checkDataDir(dir string) Check {
	const what = "data_dir"
	d := dir
	for {
		st, err := os.Stat(d)
		if err == nil {
			if !st.IsDir() {
				return Check{CheckFail, what, d + " is not a directory"}
			}
			break
		}
		parent := filepath.Dir(d)
		if !errors.Is(err, os.ErrNotExist) || parent == d {
			return Check{CheckFail, what, fmt.Sprintf("%s: %v", d, err)}
		}
		d = parent
	}
	if err := unix.Access(d, unix.W_OK|unix.X_OK); err != nil {
		return Check{CheckFail, what, fmt.Sprintf("%s is not writable by this user: %v", d, err)}
	}
	if d != dir {
		return Check{CheckOK, what, fmt.Sprintf("%s does not exist yet; %s, where it will be created, is writable", dir, d)}
	}
	return Check{CheckOK, what, dir + " is writable"}
}

func checkReadable(what, file string) Check {
	data, err := os.ReadFile(file)
	if err != nil {
		return Check{CheckFail, what, fmt.Sprintf("cannot be read: %v", err)}
	}
	return Check{CheckOK, what, fmt.Sprintf("%s is readable (%d bytes)", file, len(data))}
}

func checkCA(what, file string) Check {
	data, err := os.ReadFile(file)
	if err != nil {
		return Check{CheckFail, what, fmt.Sprintf("cannot be read: %v", err)}
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		return Check{CheckFail, what, file + " holds no PEM certificate"}
	}
	return Check{CheckOK, what, file + " holds CA certificates"}
}

// checkPair loads a certificate and its key (a client or NATS server pair).
func checkPair(what, certFile, keyFile string) []Check {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return []Check{{CheckFail, what, fmt.Sprintf("%s and %s: %v", certFile, keyFile, err)}}
	}
	leaf := cert.Leaf
	if leaf == nil {
		leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	status, note := CheckOK, ""
	if leaf != nil && time.Until(leaf.NotAfter) <= 0 {
		status, note = CheckFail, " — EXPIRED"
	}
	c := Check{status, what, fmt.Sprintf("%s and its key load%s", certFile, note)}
	return append([]Check{c}, keyModeCheck(what+".key_file", keyFile)...)
}

// keyModeCheck warns about a private key others can read.
func keyModeCheck(what, file string) []Check {
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm()&0o004 == 0 {
		return nil
	}
	return []Check{{CheckWarn, what, fmt.Sprintf("%s is readable by every user (mode %s): chmod o-r", file, st.Mode().Perm())}}
}

// checkBind binds addr and closes it at once.
func checkBind(what, network, addr string) Check {
	var err error
	if network == "udp" {
		var pc net.PacketConn
		if pc, err = net.ListenPacket("udp", addr); err == nil {
			pc.Close()
		}
	} else {
		var l net.Listener
		if l, err = net.Listen("tcp", addr); err == nil {
			l.Close()
		}
	}
	label := addr + "/" + network
	switch {
	case err == nil:
		return Check{CheckOK, what, label + " can be bound"}
	case errors.Is(err, syscall.EADDRINUSE):
		return Check{CheckWarn, what, label + " is in use (by Outpost itself if it is running; otherwise it will not start)"}
	case errors.Is(err, syscall.EACCES) && privileged(addr):
		return Check{CheckSkip, what, label + ": a port below 1024 needs CAP_NET_BIND_SERVICE, which the systemd unit grants; not checked as this user"}
	}
	return Check{CheckFail, what, fmt.Sprintf("%s cannot be bound: %v", label, err)}
}

func privileged(addr string) bool {
	_, port, _ := net.SplitHostPort(addr)
	n, err := strconv.Atoi(port)
	return err == nil && n > 0 && n < 1024
}

// checkResolve looks host up; failure is a warning, as Outpost retries.
func checkResolve(ctx context.Context, what, host, retry string) Check {
	if host == "" {
		return Check{CheckFail, what, "no host"}
	}
	if net.ParseIP(host) != nil {
		return Check{CheckOK, what, host + " is an address"}
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		return Check{CheckWarn, what, fmt.Sprintf("%s does not resolve here (%v); %s", host, err, retry)}
	}
	return Check{CheckOK, what, fmt.Sprintf("%s resolves to %v", host, addrs)}
}

// DeploymentOK says whether no check failed.
func DeploymentOK(checks []Check) bool {
	for _, c := range checks {
		if c.Status == CheckFail {
			return false
		}
	}
	return true
}

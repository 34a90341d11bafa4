package forwarder

import (
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/outpost-siem/outpost/aggregator/config"
)

// Config is the `forwarder` section of outpost.yaml.
type Config struct {
	// Vendor is CEF's Device Vendor; Product is always "Outpost".
	Vendor string `yaml:"vendor"`
	// Hostname is the syslog HOSTNAME and CEF dvchost; default: this host's name.
	Hostname string `yaml:"hostname"`
	// Instance names this Outpost in CEF deviceExternalId, to tell several
	// appliances apart in the SIEM. Default: Hostname.
	Instance string `yaml:"instance"`
	// SentIDsTTL is how long the id of an alert already delivered is kept
	// (Badger, key prefix f/) to suppress it when a crash replays it.
	// Default 7 days, the ALERTS stream's default max_age: a replay can't
	// reach back further than the stream keeps alerts.
	SentIDsTTL time.Duration `yaml:"sent_ids_ttl"`
	// Destinations are the syslog receivers; at least one. Each has its own
	// durable consumer on ALERTS, so each gets every alert its filter passes,
	// at its own pace.
	Destinations []Destination `yaml:"destinations"`
}

// Destination is one syslog receiver.
type Destination struct {
	// Name labels metrics and names the durable consumer
	// (outpost-forwarder-<name>); letters, digits, - and _. Default "siem"
	// for a single destination, required when there are several.
	Name string `yaml:"name"`
	// Address is host:port of the receiver. Required.
	Address string `yaml:"address"`
	// Transport: tcp (default), tls, udp (lossy, see docs/forwarding.md) or
	// relp (acknowledged by the receiver).
	Transport string `yaml:"transport"`
	// Format of the syslog message: rfc5424 (default; CEF in MSG, no BOM)
	// or rfc3164 (`<PRI>Mmm dd hh:mm:ss host CEF:0|...`).
	Format string `yaml:"format"`
	// Framing of syslog over tcp and tls: "lf" (default; safe because the
	// CEF encoder never emits a raw newline) or "octet-counting" (RFC 6587).
	// UDP sends one message per datagram and RELP frames itself.
	Framing string `yaml:"framing"`
	// Facility of the syslog messages, by name; default "local4".
	Facility string `yaml:"facility"`
	// MinSeverity drops (acks without sending) alerts below this CEF
	// severity, 0-10. Default 0: everything.
	MinSeverity int `yaml:"min_severity"`
	// Tags, if set, passes only alerts that carry at least one of them
	// (rule tags such as T1110 or attack.credential_access).
	Tags []string `yaml:"tags"`
	// Fallback names another destination that takes this one's alerts
	// while this one is down (see FailoverAfter and docs/forwarding.md).
	Fallback string `yaml:"fallback"`
	// FailoverAfter is how long this destination must have failed before
	// its alerts go to the fallback; default 30s.
	FailoverAfter time.Duration `yaml:"failover_after"`
	// TLS applies to transport tls (and relp over TLS is not offered).
	TLS TLSConfig `yaml:"tls"`
	// RELP tunes transport relp.
	RELP RELPConfig `yaml:"relp"`
	// MaxMessageSize caps one syslog message; a longer one is cut on a
	// UTF-8 boundary and counted. Default 2048 for udp (RFC 5426 §3.2, no
	// IP fragmentation on most links), 0 (no cap) otherwise.
	MaxMessageSize config.ByteSize `yaml:"max_message_size"`
	// RateLimit, if set, paces what goes to this destination. It delays,
	// never drops: alerts wait in JetStream.
	RateLimit RateLimit `yaml:"rate_limit"`
	// DialTimeout bounds each connect (and TLS handshake); WriteTimeout
	// each batch write (and, for relp, the wait for its acks), and is how
	// long a tcp or tls connection may hold bytes the receiver does not
	// acknowledge without that count shrinking before it is treated as
	// down (also set as TCP_USER_TIMEOUT); KeepAlive is
	// the TCP keepalive period, which finds a half-open connection even
	// when nothing is being sent.
	DialTimeout  time.Duration `yaml:"dial_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	KeepAlive    time.Duration `yaml:"keepalive"`
	// ResendWindow (tcp, tls) is how many bytes after an alert the
	// receiver's TCP must have acknowledged before the alert counts as
	// delivered and is acked in JetStream. What a proxy, relay or the
	// receiver itself acknowledged but had not read yet sits in its
	// receive buffers, and is lost if it dies or the link is cut; this
	// window is written again on a new connection after a failure. Set it
	// to at least the receive buffers on the way to the SIEM's application
	// (Linux: net.ipv4.tcp_rmem's maximum, per hop). Default 8MiB. A
	// graceful close that the receiver answers with its own confirms
	// everything before it (the forwarder does that after 0.5s idle and on
	// shutdown).
	ResendWindow config.ByteSize `yaml:"resend_window"`
	// BackoffMax caps the wait between reconnects (exponential with jitter
	// from 100ms).
	BackoffMax time.Duration `yaml:"backoff_max"`
}

// TLSConfig is a destination's TLS client configuration. The server is
// always verified: against CAFile if set (a pinned CA: only certificates it
// issued are accepted), else against the system roots.
type TLSConfig struct {
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile, both or neither: the client certificate for
	// mutual TLS.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is checked against the server certificate; default: the
	// host part of Address.
	ServerName string `yaml:"server_name"`
	// MinVersion: "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version"`
}

// RELPConfig tunes the RELP client.
type RELPConfig struct {
	// Window is how many syslog commands may be unacknowledged at once;
	// default 128.
	Window int `yaml:"window"`
}

// RateLimit paces a destination; zero fields are unlimited.
type RateLimit struct {
	AlertsPerSecond float64         `yaml:"alerts_per_second"`
	BytesPerSecond  config.ByteSize `yaml:"bytes_per_second"`
}

// Transports, formats and framings.
const (
	TransportTCP  = "tcp"
	TransportTLS  = "tls"
	TransportUDP  = "udp"
	TransportRELP = "relp"

	FormatRFC5424 = "rfc5424"
	FormatRFC3164 = "rfc3164"

	FramingLF            = "lf"
	FramingOctetCounting = "octet-counting"
)

var facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

var validName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Validate applies defaults in place and reports every bad value.
func (c *Config) Validate() error {
	var errs config.Errors
	if c.Vendor == "" {
		c.Vendor = "Outpost"
	}
	if c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "outpost"
		}
		c.Hostname = h
	}
	if len(c.Hostname) > 255 || strings.IndexFunc(c.Hostname, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0 {
		errs.Add("forwarder.hostname", "%q must be 1-255 printable ASCII characters without spaces (RFC 5424 HOSTNAME)", c.Hostname)
	}
	if c.Instance == "" {
		c.Instance = c.Hostname
	}
	if c.SentIDsTTL == 0 {
		c.SentIDsTTL = 7 * 24 * time.Hour
	}
	if c.SentIDsTTL < time.Minute {
		errs.Add("forwarder.sent_ids_ttl", "must be at least 1m, got %s", c.SentIDsTTL)
	}
	if len(c.Destinations) == 0 {
		errs.Add("forwarder.destinations", "required: at least one SIEM syslog receiver (name, address)")
	}
	names := map[string]bool{}
	for i := range c.Destinations {
		d := &c.Destinations[i]
		if d.Name == "" && len(c.Destinations) == 1 {
			d.Name = "siem"
		}
		p := fmt.Sprintf("forwarder.destinations[%d]", i)
		if d.Name != "" {
			p = fmt.Sprintf("forwarder.destinations[%s]", d.Name)
		}
		switch {
		case !validName.MatchString(d.Name):
			errs.Add(p+".name", "%q must be 1-64 letters, digits, - or _ (it names a JetStream consumer)", d.Name)
		case names[d.Name]:
			errs.Add(p+".name", "%q is used twice", d.Name)
		}
		names[d.Name] = true
		d.validate(p, &errs)
	}
	for _, d := range c.Destinations {
		if d.Fallback == "" {
			continue
		}
		if d.Fallback == d.Name || !names[d.Fallback] {
			errs.Add(fmt.Sprintf("forwarder.destinations[%s].fallback", d.Name), "%q must name another destination", d.Fallback)
		}
	}
	return errs.Err()
}

func (d *Destination) validate(p string, errs *config.Errors) {
	if d.Address == "" {
		errs.Add(p+".address", "required: host:port of the SIEM's syslog receiver")
	} else if _, _, err := net.SplitHostPort(d.Address); err != nil {
		errs.Add(p+".address", "%q is not host:port: %v", d.Address, err)
	}
	d.Transport = cmpOr(d.Transport, TransportTCP)
	switch d.Transport {
	case TransportTCP, TransportTLS, TransportUDP, TransportRELP:
	default:
		errs.Add(p+".transport", "%q must be tcp, tls, udp or relp", d.Transport)
	}
	d.Format = cmpOr(d.Format, FormatRFC5424)
	if d.Format != FormatRFC5424 && d.Format != FormatRFC3164 {
		errs.Add(p+".format", "%q must be rfc5424 or rfc3164", d.Format)
	}
	d.Framing = cmpOr(d.Framing, FramingLF)
	if d.Framing != FramingLF && d.Framing != FramingOctetCounting {
		errs.Add(p+".framing", "%q must be lf or octet-counting", d.Framing)
	}
	d.Facility = cmpOr(d.Facility, "local4")
	if _, ok := facilities[d.Facility]; !ok {
		errs.Add(p+".facility", "unknown facility %q (e.g. local4, authpriv)", d.Facility)
	}
	if d.MinSeverity < 0 || d.MinSeverity > 10 {
		errs.Add(p+".min_severity", "must be 0-10, got %d", d.MinSeverity)
	}
	if d.Transport != TransportTLS && (d.TLS.CAFile != "" || d.TLS.CertFile != "" || d.TLS.KeyFile != "" || d.TLS.ServerName != "") {
		errs.Add(p+".tls", "only applies to transport tls")
	}
	if (d.TLS.CertFile == "") != (d.TLS.KeyFile == "") {
		errs.Add(p+".tls", "cert_file and key_file go together (mutual TLS)")
	}
	d.TLS.MinVersion = cmpOr(d.TLS.MinVersion, "1.2")
	if d.TLS.MinVersion != "1.2" && d.TLS.MinVersion != "1.3" {
		errs.Add(p+".tls.min_version", "%q must be 1.2 or 1.3", d.TLS.MinVersion)
	}
	if d.RELP.Window == 0 {
		d.RELP.Window = 128
	}
	if d.RELP.Window < 1 || d.RELP.Window > 4096 {
		errs.Add(p+".relp.window", "must be 1-4096, got %d", d.RELP.Window)
	}
	if d.MaxMessageSize == 0 && d.Transport == TransportUDP {
		d.MaxMessageSize = 2048
	}
	if d.MaxMessageSize < 0 || (d.MaxMessageSize > 0 && d.MaxMessageSize < 480) {
		errs.Add(p+".max_message_size", "must be 0 (no cap) or at least 480 (RFC 5426), got %d", d.MaxMessageSize)
	}
	if d.Transport == TransportUDP && d.MaxMessageSize > 65507 {
		errs.Add(p+".max_message_size", "a UDP datagram carries at most 65507 bytes")
	}
	if d.RateLimit.AlertsPerSecond < 0 || d.RateLimit.BytesPerSecond < 0 {
		errs.Add(p+".rate_limit", "must not be negative")
	}
	if d.ResendWindow == 0 {
		d.ResendWindow = 8 << 20
	}
	if d.ResendWindow < 0 {
		errs.Add(p+".resend_window", "must not be negative")
	}
	if d.FailoverAfter == 0 {
		d.FailoverAfter = 30 * time.Second
	}
	if d.DialTimeout == 0 {
		d.DialTimeout = 5 * time.Second
	}
	if d.WriteTimeout == 0 {
		d.WriteTimeout = 10 * time.Second
	}
	if d.KeepAlive == 0 {
		d.KeepAlive = 30 * time.Second
	}
	if d.BackoffMax == 0 {
		d.BackoffMax = 30 * time.Second
	}
	if d.DialTimeout < 0 || d.WriteTimeout < 0 || d.BackoffMax < 0 || d.KeepAlive < 0 || d.FailoverAfter < 0 {
		errs.Add(p, "timeouts, keepalive, failover_after and backoff_max must be positive")
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

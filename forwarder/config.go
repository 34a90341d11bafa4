package forwarder

import (
	"net"
	"os"
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
	// Destination is the on-prem SIEM's syslog receiver.
	Destination Destination `yaml:"destination"`
}

// Destination is one syslog receiver.
type Destination struct {
	// Name labels metrics and the durable consumer; default "siem".
	Name string `yaml:"name"`
	// Address is host:port of the receiver. Required.
	Address string `yaml:"address"`
	// Transport: "tcp". (TLS, UDP and RELP are planned, see docs.)
	Transport string `yaml:"transport"`
	// Framing of syslog over TCP: "lf" (default; safe because the CEF
	// encoder never emits a raw newline) or "octet-counting" (RFC 6587).
	Framing string `yaml:"framing"`
	// Facility of the syslog messages, by name; default "local4".
	Facility string `yaml:"facility"`
	// DialTimeout and WriteTimeout bound each connect and each batch write.
	DialTimeout  time.Duration `yaml:"dial_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// BackoffMax caps the wait between reconnects (exponential with jitter
	// from 100ms).
	BackoffMax time.Duration `yaml:"backoff_max"`
}

// Framings.
const (
	FramingLF            = "lf"
	FramingOctetCounting = "octet-counting"
)

var facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

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
		errs.Addf("forwarder.hostname: %q must be 1-255 printable ASCII characters without spaces (RFC 5424 HOSTNAME)", c.Hostname)
	}
	if c.Instance == "" {
		c.Instance = c.Hostname
	}
	d := &c.Destination
	if d.Name == "" {
		d.Name = "siem"
	}
	if d.Address == "" {
		errs.Addf("forwarder.destination.address: required: host:port of the SIEM's syslog receiver")
	} else if _, _, err := net.SplitHostPort(d.Address); err != nil {
		errs.Addf("forwarder.destination.address: %q is not host:port: %v", d.Address, err)
	}
	if d.Transport == "" {
		d.Transport = "tcp"
	}
	if d.Transport != "tcp" {
		errs.Addf("forwarder.destination.transport: %q is not supported yet (supported: tcp)", d.Transport)
	}
	if d.Framing == "" {
		d.Framing = FramingLF
	}
	if d.Framing != FramingLF && d.Framing != FramingOctetCounting {
		errs.Addf("forwarder.destination.framing: %q must be lf or octet-counting", d.Framing)
	}
	if d.Facility == "" {
		d.Facility = "local4"
	}
	if _, ok := facilities[d.Facility]; !ok {
		errs.Addf("forwarder.destination.facility: unknown facility %q (e.g. local4, authpriv)", d.Facility)
	}
	if d.DialTimeout == 0 {
		d.DialTimeout = 5 * time.Second
	}
	if d.WriteTimeout == 0 {
		d.WriteTimeout = 10 * time.Second
	}
	if d.BackoffMax == 0 {
		d.BackoffMax = 30 * time.Second
	}
	if d.DialTimeout < 0 || d.WriteTimeout < 0 || d.BackoffMax < 0 {
		errs.Addf("forwarder.destination: timeouts and backoff_max must be positive")
	}
	return errs.Err()
}

package syslog

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/config"
)

func TestConfigDefaults(t *testing.T) {
	var c Config
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := Config{MaxMessageSize: 65507, Timezone: "UTC", MaxConnections: 1024}
	if c.MaxMessageSize != want.MaxMessageSize || c.Timezone != want.Timezone ||
		c.MaxConnections != want.MaxConnections || c.MaxConnectionsPerSource != 64 ||
		c.IdleTimeout != 10*time.Minute || c.FrameTimeout != 30*time.Second || c.Attributes != AttributesRead {
		t.Errorf("defaults %+v, want %+v", c, want)
	}
}

func TestConfigValid(t *testing.T) {
	c := Config{
		UDP:            []string{"0.0.0.0:514", "[::1]:514", ":5514"},
		TCP:            []string{"0.0.0.0:514", "127.0.0.1:0", "127.0.0.1:0"},
		MaxMessageSize: 480,
		Timezone:       "Europe/Berlin",
		MaxConnections: 1,
		IdleTimeout:    time.Minute,
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.MaxMessageSize = 16 << 20
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigErrors(t *testing.T) {
	c := Config{
		UDP:            []string{"0.0.0.0", "0.0.0.0:514", "0.0.0.0:514"},
		TCP:            []string{"host:syslog", "host:70000", "[::1"},
		MaxMessageSize: 479,
		Timezone:       "Mars/Olympus",
		MaxConnections: -1,
		IdleTimeout:    -time.Second,
		Attributes:     "some",
	}
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad config")
	}
	lines := strings.Split(err.Error(), "\n")
	for _, want := range []string{
		`ingest.syslog.udp[0]: "0.0.0.0" is not host:port: missing port in address`,
		`ingest.syslog.udp[2]: "0.0.0.0:514" is listed twice`,
		`ingest.syslog.tcp[0]: "host:syslog" is not host:port: port must be a number from 0 to 65535`,
		`ingest.syslog.tcp[1]: "host:70000" is not host:port: port must be a number from 0 to 65535`,
		`ingest.syslog.tcp[2]: "[::1" is not host:port: missing ']' in address`,
		`ingest.syslog.max_message_size: must be 480 B to 16 MiB, got 479 B`,
		`ingest.syslog.timezone: "Mars/Olympus" is not an IANA time zone`,
		`ingest.syslog.max_connections: must be positive, got -1`,
		`ingest.syslog.idle_timeout: must be positive, got -1s`,
		`ingest.syslog.attributes: "some" is neither "read" nor "all"`,
	} {
		found := false
		for _, l := range lines {
			found = found || strings.HasPrefix(l, want)
		}
		if !found {
			t.Errorf("missing %q in\n%s", want, err)
		}
	}
	if len(lines) != 10 {
		t.Errorf("%d problems, want 10:\n%s", len(lines), err)
	}
	if err := (&Config{MaxMessageSize: 16<<20 + 1}).Validate(); err == nil {
		t.Error("accepted max_message_size above 16 MiB")
	}
}

// Left out, udp and tcp default to 0.0.0.0:514 as documented; an explicit
// empty list turns that transport off.
func TestConfigDefaultListeners(t *testing.T) {
	for _, tt := range []struct {
		yaml     string
		udp, tcp []string
	}{
		{"{}", []string{"0.0.0.0:514"}, []string{"0.0.0.0:514"}},
		{"timezone: UTC", []string{"0.0.0.0:514"}, []string{"0.0.0.0:514"}},
		{"udp: []\ntcp: []", nil, nil},
		{"tcp: ['127.0.0.1:5514']", nil, []string{"127.0.0.1:5514"}},
		{"udp: ['127.0.0.1:5514']\ntcp: []", []string{"127.0.0.1:5514"}, nil},
	} {
		var c Config
		if err := config.DecodeStrict("t.yaml", []byte(tt.yaml), &c); err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(c.UDP, tt.udp) || !slices.Equal(c.TCP, tt.tcp) {
			t.Errorf("%q: udp %q tcp %q, want %q %q", tt.yaml, c.UDP, c.TCP, tt.udp, tt.tcp)
		}
	}
}

func TestConfigAllow(t *testing.T) {
	c := Config{
		TCP:   []string{"0.0.0.0:514"},
		Allow: map[string][]string{"0.0.0.0:514": {"10.0.0.0/8", "2001:db8::/32", "192.0.2.7", "::ffff:198.51.100.0/120"}},
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	l := c.allow["0.0.0.0:514"]
	for addr, want := range map[string]bool{
		"10.1.2.3": true, "11.0.0.1": false, "2001:db8::1": true, "2001:db9::1": false,
		"192.0.2.7": true, "192.0.2.8": false, "::ffff:10.0.0.1": true, "198.51.100.9": true,
	} {
		if got := l.allows(netip.MustParseAddr(addr)); got != want {
			t.Errorf("allows(%s) = %v, want %v", addr, got, want)
		}
	}
	if !allowList(nil).allows(netip.MustParseAddr("203.0.113.1")) || (allowList{}).allows(netip.MustParseAddr("10.0.0.1")) {
		t.Error("no list must allow all, an empty list none")
	}

	bad := Config{TCP: []string{"0.0.0.0:514"}, Allow: map[string][]string{"0.0.0.0:514": {"10.0.0.0/33", "host"}, "0.0.0.0:515": nil}}
	err := bad.Validate()
	if err == nil {
		t.Fatal("Validate accepted bad allow lists")
	}
	for _, want := range []string{
		`ingest.syslog.allow["0.0.0.0:514"][0]: "10.0.0.0/33" is not a prefix`,
		`ingest.syslog.allow["0.0.0.0:514"][1]: "host" is not a prefix`,
		`ingest.syslog.allow["0.0.0.0:515"]: not a listen address`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in\n%s", want, err)
		}
	}
}

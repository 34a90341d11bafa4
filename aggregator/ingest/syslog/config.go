package syslog

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-siem/outpost/aggregator/config"
)

// Limits and defaults of the `ingest.syslog` section.
const (
	// DefaultMaxMessageSize is the largest UDP payload over IPv4, so the
	// limit means something for datagrams too: one over IPv6 that is longer
	// is counted as oversize.
	DefaultMaxMessageSize = 65507
	// MinMaxMessageSize is the size RFC 3164 §6.1 and RFC 5424 §6.1 say
	// every receiver must accept.
	MinMaxMessageSize     = 480
	MaxMaxMessageSize     = 16 << 20
	DefaultMaxConnections = 1024
	// DefaultMaxConnectionsPerSource leaves room for a relay's several
	// connections, not for one address to take the table.
	DefaultMaxConnectionsPerSource = 64
	DefaultIdleTimeout             = 10 * time.Minute
	DefaultFrameTimeout            = 30 * time.Second
	DefaultUDPReadBuffer           = 8 << 20
	DefaultTimezone                = "UTC"
	// DefaultListen is where udp and tcp listen when both are left out.
	DefaultListen = "0.0.0.0:514"
)

// Config is the `ingest.syslog` section of outpost.yaml.
type Config struct {
	// UDP lists the addresses to receive datagrams on, e.g. "0.0.0.0:514".
	// An empty list ([]): no UDP. When udp and tcp are left out (nil) and
	// no tls or relp listener is set, each defaults to ["0.0.0.0:514"].
	UDP []string `yaml:"udp"`
	// TCP lists the addresses to accept connections on. Empty: no TCP.
	TCP []string `yaml:"tcp"`
	// TLS lists syslog-over-TLS listeners (RFC 5425, port 6514 by
	// convention): the same framing, limits and dead-lettering as TCP.
	TLS []TLSListener `yaml:"tls"`
	// RELP lists RELP listeners (rsyslog's omrelp), plain or TLS: a
	// message is acknowledged only once it is in JetStream.
	RELP []RELPListener `yaml:"relp"`
	// HandshakeTimeout bounds a TLS handshake. Default 10s.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// MaxMessageSize bounds one message (one datagram or one TCP frame).
	// Longer input is counted and dead-lettered, never truncated into an
	// event. Default 65507 B (the largest IPv4 UDP payload); at least
	// 480 B, at most 16MiB.
	MaxMessageSize config.ByteSize `yaml:"max_message_size"`
	// Timezone is the IANA zone RFC 3164 timestamps are read in (they carry
	// none). Default "UTC".
	Timezone string `yaml:"timezone"`
	// MaxConnections caps concurrent TCP connections over all TCP
	// listeners. When they are open, a new connection takes the place of
	// the one that has delivered no frame for longest, if that has been
	// idle for a second; otherwise it is accepted and closed at once.
	// Default 1024.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerSource caps the TCP connections from one source
	// address. Default 64.
	MaxConnectionsPerSource int `yaml:"max_connections_per_source"`
	// IdleTimeout closes a TCP connection that sent nothing for this long.
	// Default 10m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// FrameTimeout closes a TCP connection whose frame, once begun, has
	// not arrived whole within this long (a slowloris sender). Default 30s.
	FrameTimeout time.Duration `yaml:"frame_timeout"`
	// Allow restricts listeners to senders in the listed prefixes (CIDR,
	// IPv4 or IPv6; a bare address is one host). The key is a listen
	// address as written in udp, tcp, tls or relp; it restricts every
	// listener on it. A listener not named serves any sender. A refused
	// connection is closed at once, a refused datagram dropped; both are
	// counted.
	Allow map[string][]string `yaml:"allow"`
	// UDPReadBuffer is the kernel receive buffer asked for each UDP socket
	// (SO_RCVBUF); bursts beyond it are dropped by the kernel. Linux caps
	// it at net.core.rmem_max, so raise that sysctl too. Default 8MiB.
	UDPReadBuffer config.ByteSize `yaml:"udp_read_buffer"`
	// Attributes says which of a message's attributes (its structured
	// data, its CEF/LEEF/key=value/JSON keys, its Windows fields) go on
	// the bus: "read" (the default) keeps those the loaded rules read and
	// the schema's fields, "all" keeps every one. The message itself is
	// always kept.
	Attributes string `yaml:"attributes"`

	allow map[string]allowList // Allow, parsed by Validate
}

// allowList is the prefixes a listener serves; nil serves everyone.
type allowList []netip.Prefix

func (l allowList) allows(a netip.Addr) bool {
	if l == nil {
		return true
	}
	a = a.Unmap()
	for _, p := range l {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Validate applies defaults in place and returns every problem
// (config.Errors), each naming its key as `ingest.syslog.<key>`.
func (c *Config) Validate() error {
	var errs config.Errors
	// Left out, not set to []: with no TLS or RELP listener either, plain
	// UDP and TCP on 514.
	if c.UDP == nil && c.TCP == nil && len(c.TLS) == 0 && len(c.RELP) == 0 {
		c.UDP, c.TCP = []string{DefaultListen}, []string{DefaultListen}
	}
	switch c.Attributes {
	case "":
		c.Attributes = AttributesRead
	case AttributesRead, AttributesAll:
	default:
		errs.Add("ingest.syslog.attributes", "%q is neither %q nor %q", c.Attributes, AttributesRead, AttributesAll)
	}
	seen := make(map[string]bool)
	checkAddrs := func(key string, addrs []string) {
		for i, a := range addrs {
			if err := checkHostPort(a); err != "" {
				errs.Add(fmt.Sprintf("ingest.syslog.%s[%d]", key, i), "%q is not host:port: %s", a, err)
				continue
			}
			if seen[key+" "+a] && !strings.HasSuffix(a, ":0") { // port 0: the system picks one each time
				errs.Add(fmt.Sprintf("ingest.syslog.%s[%d]", key, i), "%q is listed twice", a)
			}
			seen[key+" "+a] = true
		}
	}
	checkAddrs("udp", c.UDP)
	checkAddrs("tcp", c.TCP)
	// One port serves one protocol: tcp, tls and relp share the key.
	streams := slices.Clone(c.TCP)
	checkStream := func(key, listen string) {
		if err := checkHostPort(listen); err != "" {
			errs.Add(key+".listen", "%q is not host:port: %s", listen, err)
		} else if slices.Contains(streams, listen) && !strings.HasSuffix(listen, ":0") {
			errs.Add(key+".listen", "%q is already a tcp, tls or relp listener", listen)
		}
		streams = append(streams, listen)
	}
	for i, l := range c.TLS {
		key := fmt.Sprintf("ingest.syslog.tls[%d]", i)
		checkStream(key, l.Listen)
		l.validate(&errs, key)
	}
	for i, l := range c.RELP {
		key := fmt.Sprintf("ingest.syslog.relp[%d]", i)
		checkStream(key, l.Listen)
		if l.TLS != nil {
			l.TLS.validate(&errs, key+".tls")
		}
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.HandshakeTimeout < 0 {
		errs.Add("ingest.syslog.handshake_timeout", "must be positive, got %s", c.HandshakeTimeout)
	}
	c.allow = make(map[string]allowList, len(c.Allow))
	for _, addr := range slices.Sorted(maps.Keys(c.Allow)) {
		if !slices.Contains(c.UDP, addr) && !slices.Contains(streams, addr) {
			errs.Add(fmt.Sprintf("ingest.syslog.allow[%q]", addr), "not a listen address of ingest.syslog.udp, tcp, tls or relp")
		}
		list := allowList{} // not nil: an empty list allows no one
		for i, s := range c.Allow[addr] {
			p, err := parsePrefix(s)
			if err != nil {
				errs.Add(fmt.Sprintf("ingest.syslog.allow[%q][%d]", addr, i), "%q is not a prefix such as 10.0.0.0/8 or 2001:db8::/32: %v", s, err)
				continue
			}
			list = append(list, p)
		}
		c.allow[addr] = list
	}

	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.MaxMessageSize < MinMaxMessageSize || c.MaxMessageSize > MaxMaxMessageSize {
		errs.Add("ingest.syslog.max_message_size", "must be %s to %s, got %s",
			config.ByteSize(MinMaxMessageSize), config.ByteSize(MaxMaxMessageSize), c.MaxMessageSize)
	}

	if c.Timezone == "" {
		c.Timezone = DefaultTimezone
	}
	if _, err := time.LoadLocation(c.Timezone); err != nil {
		errs.Add("ingest.syslog.timezone", "%q is not an IANA time zone such as Europe/Berlin: %v", c.Timezone, err)
	}

	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MaxConnections < 0 {
		errs.Add("ingest.syslog.max_connections", "must be positive, got %d", c.MaxConnections)
	}
	if c.UDPReadBuffer == 0 {
		c.UDPReadBuffer = DefaultUDPReadBuffer
	}
	if c.UDPReadBuffer < 0 || c.UDPReadBuffer > 1<<30 {
		errs.Add("ingest.syslog.udp_read_buffer", "must be between 1 and 1GiB, got %d", c.UDPReadBuffer)
	}
	if c.MaxConnectionsPerSource == 0 {
		c.MaxConnectionsPerSource = DefaultMaxConnectionsPerSource
	}
	if c.MaxConnectionsPerSource < 0 {
		errs.Add("ingest.syslog.max_connections_per_source", "must be positive, got %d", c.MaxConnectionsPerSource)
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.IdleTimeout < 0 {
		errs.Add("ingest.syslog.idle_timeout", "must be positive, got %s", c.IdleTimeout)
	}
	if c.FrameTimeout == 0 {
		c.FrameTimeout = DefaultFrameTimeout
	}
	if c.FrameTimeout < 0 {
		errs.Add("ingest.syslog.frame_timeout", "must be positive, got %s", c.FrameTimeout)
	}
	return errs.Err()
}

// parsePrefix parses a CIDR prefix or a bare address (one host), with an
// IPv4-mapped IPv6 prefix taken as the IPv4 one it maps.
func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// checkHostPort says what is wrong with addr as a listen address, or "".
// The port must be numeric: a service name would be resolved at listen time,
// long after the config was accepted.
func checkHostPort(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return ae.Err
		}
		return err.Error()
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "port must be a number from 0 to 65535"
	}
	return ""
}

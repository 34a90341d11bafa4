package bus

import (
	"net"
	"time"

	"github.com/outpost-siem/outpost/aggregator/config"
)

// Config is the `nats` section of outpost.yaml.
type Config struct {
	// URL of an external NATS cluster (with JetStream). Empty: Outpost runs
	// an embedded server whose store lives in the data dir.
	URL string `yaml:"url"`
	// CredsFile authenticates to the external cluster (NATS .creds file).
	CredsFile string `yaml:"creds_file"`
	// Listen is where the embedded server accepts NATS clients, e.g.
	// "127.0.0.1:4222" to let the `nats` CLI look inside. Empty: in-process
	// only, no socket at all. Clients must authenticate with the read-only
	// nkey generated into <data_dir>/nats/reader.nk; only Outpost itself,
	// in-process, may publish. An address off loopback requires TLS.
	Listen string `yaml:"listen"`
	// TLS for the client port opened by Listen.
	TLS ListenTLS `yaml:"tls"`
	// Replicas of each stream; 1 on one machine, 3 on a cluster.
	Replicas int `yaml:"replicas"`
	// Partitions of MATCHES, by hash(rule, group key). Fixed for the life of
	// the data: windows state is sharded by it.
	Partitions int `yaml:"partitions"`
	// DuplicateWindow is how long JetStream remembers alert ids to drop a
	// replayed alert at publish time.
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
	// PublishTimeout bounds the wait for JetStream's ack of one publish;
	// past it the publish fails and is retried (counted in
	// outpost_bus_publish_errors_total). Default 10s.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// SyncInterval is how often the embedded server fsyncs its store:
	// JetStream acks a message once it is written to the OS, which a
	// process crash does not lose, and fsyncs every SyncInterval (default
	// 2m, JetStream's own), which bounds what a power loss can. "always"
	// fsyncs every write, at a cost in throughput. An external cluster
	// sets its own (sync_interval in its jetstream block).
	SyncInterval string `yaml:"sync_interval"`

	Streams Streams `yaml:"streams"`

	syncAlways bool
	syncEvery  time.Duration
}

// ListenTLS is TLS on the embedded server's client port. With CertFile and
// KeyFile set, every client must speak TLS; with ClientCAFile set too, it
// must also present a certificate signed by that CA (the nkey is still
// required).
type ListenTLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

func (t ListenTLS) enabled() bool { return t.CertFile != "" }

// Streams holds the limits of each stream.
type Streams struct {
	Events     StreamLimits `yaml:"events"`
	Matches    StreamLimits `yaml:"matches"`
	Alerts     StreamLimits `yaml:"alerts"`
	DeadLetter StreamLimits `yaml:"deadletter"`
}

// StreamLimits bound one stream on disk.
type StreamLimits struct {
	MaxBytes config.ByteSize `yaml:"max_bytes"`
	MaxAge   time.Duration   `yaml:"max_age"`
}

// Validate applies defaults in place and reports every bad value.
func (c *Config) Validate() error {
	var errs config.Errors
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs.Add("nats.replicas", "must be 1 to 5, got %d", c.Replicas)
	}
	if c.Partitions == 0 {
		c.Partitions = 16
	}
	if c.Partitions < 1 || c.Partitions > 1024 {
		errs.Add("nats.partitions", "must be 1 to 1024, got %d", c.Partitions)
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = 10 * time.Minute
	}
	if c.DuplicateWindow < 0 {
		errs.Add("nats.duplicate_window", "must be positive, got %s", c.DuplicateWindow)
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 10 * time.Second
	}
	if c.PublishTimeout < 100*time.Millisecond || c.PublishTimeout > 5*time.Minute {
		errs.Add("nats.publish_timeout", "must be 100ms to 5m, got %s", c.PublishTimeout)
	}
	switch {
	case c.SyncInterval == "":
	case c.URL != "":
		errs.Add("nats.sync_interval", "only applies to the embedded server; an external cluster sets its own")
	case c.SyncInterval == "always":
		c.syncAlways = true
	default:
		d, err := time.ParseDuration(c.SyncInterval)
		if err != nil || d < time.Second {
			errs.Add("nats.sync_interval", "must be \"always\" or a duration of at least 1s, got %q", c.SyncInterval)
		}
		c.syncEvery = d
	}
	if c.URL != "" && c.Listen != "" {
		errs.Add("nats.listen", "only applies to the embedded server; remove it or nats.url")
	}
	if c.Listen != "" {
		host, _, err := net.SplitHostPort(c.Listen)
		if err != nil {
			errs.Add("nats.listen", "%q is not host:port: %v", c.Listen, err)
		} else if !isLoopback(host) && !c.TLS.enabled() {
			errs.Add("nats.listen", "%q is reachable off this machine; set nats.tls.cert_file and key_file, or listen on 127.0.0.1", c.Listen)
		}
	}
	t := c.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		errs.Add("nats.tls", "cert_file and key_file go together")
	}
	if t.ClientCAFile != "" && t.CertFile == "" {
		errs.Add("nats.tls.client_ca_file", "needs cert_file and key_file")
	}
	if (t.CertFile != "" || t.ClientCAFile != "") && c.Listen == "" {
		errs.Add("nats.tls", "only applies with nats.listen")
	}
	defaults := []struct {
		name  string
		s     *StreamLimits
		bytes config.ByteSize
		age   time.Duration
	}{
		{"events", &c.Streams.Events, 8 << 30, 24 * time.Hour},
		{"matches", &c.Streams.Matches, 1 << 30, 24 * time.Hour},
		{"alerts", &c.Streams.Alerts, 1 << 30, 7 * 24 * time.Hour},
		{"deadletter", &c.Streams.DeadLetter, 256 << 20, 7 * 24 * time.Hour},
	}
	for _, d := range defaults {
		if d.s.MaxBytes == 0 {
			d.s.MaxBytes = d.bytes
		}
		if d.s.MaxAge == 0 {
			d.s.MaxAge = d.age
		}
		if d.s.MaxBytes < 1<<20 {
			errs.Add("nats.streams."+d.name+".max_bytes", "must be at least 1MiB, got %s", d.s.MaxBytes)
		}
		if d.s.MaxAge < time.Minute {
			errs.Add("nats.streams."+d.name+".max_age", "must be at least 1m, got %s", d.s.MaxAge)
		}
	}
	return errs.Err()
}

// isLoopback reports whether a listen host only accepts local connections.
// An empty host listens on every interface.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

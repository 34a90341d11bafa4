package azureblob

import (
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/outpost-siem/outpost/aggregator/config"
)

// Defaults and limits of the `ingest.azure_blob` section.
const (
	DefaultPollInterval      = 30 * time.Second
	DefaultDiscoveryInterval = 10 * time.Minute
	DefaultLookback          = 3 * time.Hour
	DefaultConcurrency       = 4
	DefaultMaxRecordSize     = 1 << 20
	MaxMaxRecordSize         = 16 << 20
	DefaultMaxBackoff        = 5 * time.Minute
)

// Auth kinds: how the source authenticates to one storage account.
const (
	AuthManagedIdentity  = "managed_identity"  // the VM's identity via azidentity (production)
	AuthConnectionString = "connection_string" // a storage connection string (Azurite, simple setups)
	AuthSharedKey        = "shared_key"        // account name + account key
	AuthSAS              = "sas"               // a SAS token appended to the service URL
)

// Config is the `ingest.azure_blob` section of outpost.yaml. With no
// accounts the source is off.
type Config struct {
	// PollInterval is how often each account's open hour-prefixes are
	// listed and the blobs that grew are read. Default 30s.
	PollInterval time.Duration `yaml:"poll_interval"`
	// DiscoveryInterval is how often each container's resource prefixes
	// (the path above `y=YYYY/`) are listed again to find new resources.
	// Default 10m; must be shorter than every account's lookback, so a new
	// resource's first hour is still open when it is found.
	DiscoveryInterval time.Duration `yaml:"discovery_interval"`
	// Concurrency bounds the list and read requests in flight per account.
	// Default 4.
	Concurrency int `yaml:"concurrency"`
	// MaxRecordSize bounds one record (one JSON line, or one flow-log
	// block). Longer records are counted and dead-lettered. Default 1MiB.
	MaxRecordSize config.ByteSize `yaml:"max_record_size"`
	// MaxBackoff caps the wait between polls of an account that keeps
	// failing (throttled with 429/503, unreachable, publish failing).
	// Default 5m.
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// Accounts are the storage accounts to read.
	Accounts []Account `yaml:"accounts"`
}

// Account is one storage account.
type Account struct {
	// Name labels the account in checkpoints, logs and event senders. It
	// must be unique and stable: changing it re-reads the open hours.
	Name string `yaml:"name"`
	// URL is the blob service endpoint, e.g.
	// https://mylogs.blob.core.windows.net/. Not used with a connection
	// string, which carries it.
	URL string `yaml:"url"`
	// Auth is managed_identity (default), connection_string, shared_key or sas.
	Auth string `yaml:"auth"`
	// ClientID selects a user-assigned managed identity; empty: the VM's
	// system-assigned identity.
	ClientID string `yaml:"client_id"`
	// ConnectionString, for auth connection_string.
	ConnectionString Secret `yaml:"connection_string"`
	// AccountName and AccountKey, for auth shared_key.
	AccountName string `yaml:"account_name"`
	AccountKey  Secret `yaml:"account_key"`
	// SAS is a SAS token (the query string, with or without `?`), for auth sas.
	SAS Secret `yaml:"sas"`
	// StartTime: blobs filed under hours before it are never read. Empty:
	// the start of the lookback window when the source first runs.
	StartTime time.Time `yaml:"start_time"`
	// Lookback is how far back hour-prefixes stay open: a blob is read
	// while its hour started less than Lookback ago, because Azure keeps
	// appending to the previous hour's PT1H.json after the hour turns.
	// Default 3h; at least 1h.
	Lookback time.Duration `yaml:"lookback"`
	// Containers to watch.
	Containers []Container `yaml:"containers"`
}

// Container is one container and the prefixes watched in it.
type Container struct {
	// Name, e.g. insights-logs-signinlogs.
	Name string `yaml:"name"`
	// Prefixes narrow the watch, e.g. "resourceId=/SUBSCRIPTIONS/<sub>/"
	// or "tenantId=<tid>/". Default: the whole container.
	Prefixes []string `yaml:"prefixes"`
}

// Secret is a credential given inline, by environment variable or by file
// (exactly one). It never prints: fmt (String, GoString), slog (LogValue)
// and encoding/json (MarshalJSON, which slog's JSON handler uses for a
// struct holding a Secret) all say "[redacted]".
type Secret struct {
	Value string `yaml:"value"`
	Env   string `yaml:"env"`
	File  string `yaml:"file"`
}

func (s Secret) String() string               { return "[redacted]" }
func (s Secret) GoString() string             { return "[redacted]" }
func (s Secret) LogValue() slog.Value         { return slog.StringValue("[redacted]") }
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"[redacted]"`), nil }
func (s Secret) isSet() bool                  { return s.Value != "" || s.Env != "" || s.File != "" }

var (
	// accountNameRE is what an account label may be: it goes into
	// checkpoint keys and subjects of logs.
	accountNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)
	// containerRE is Azure's container naming rule.
	containerRE = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9]|-[a-z0-9]){2,62}$`)
	// guidRE is a managed identity's client id.
	guidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$`)
)

// Validate applies defaults in place and returns every problem
// (config.Errors), each naming its key as `ingest.azure_blob.<key>`.
func (c *Config) Validate() error {
	var errs config.Errors
	const p = "ingest.azure_blob"
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.PollInterval < 100*time.Millisecond {
		errs.Add(p+".poll_interval", "must be at least 100ms, got %s", c.PollInterval)
	}
	if c.DiscoveryInterval == 0 {
		c.DiscoveryInterval = DefaultDiscoveryInterval
	}
	if c.DiscoveryInterval < c.PollInterval {
		errs.Add(p+".discovery_interval", "must be at least poll_interval (%s), got %s", c.PollInterval, c.DiscoveryInterval)
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Concurrency < 1 || c.Concurrency > 64 {
		errs.Add(p+".concurrency", "must be 1 to 64, got %d", c.Concurrency)
	}
	if c.MaxRecordSize == 0 {
		c.MaxRecordSize = DefaultMaxRecordSize
	}
	if c.MaxRecordSize < 4<<10 || c.MaxRecordSize > MaxMaxRecordSize {
		errs.Add(p+".max_record_size", "must be 4KiB to %s, got %s", config.ByteSize(MaxMaxRecordSize), c.MaxRecordSize)
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.MaxBackoff < c.PollInterval {
		errs.Add(p+".max_backoff", "must be at least poll_interval (%s), got %s", c.PollInterval, c.MaxBackoff)
	}
	names := make(map[string]bool)
	for i := range c.Accounts {
		c.Accounts[i].validate(fmt.Sprintf("%s.accounts[%d]", p, i), c.DiscoveryInterval, names, &errs)
	}
	return errs.Err()
}

func (a *Account) validate(key string, discovery time.Duration, names map[string]bool, errs *config.Errors) {
	if !accountNameRE.MatchString(a.Name) {
		errs.Add(key+".name", "%q must be 1-63 letters, digits, '.', '_' or '-'", a.Name)
	} else if names[a.Name] {
		errs.Add(key+".name", "%q is used by another account", a.Name)
	}
	names[a.Name] = true
	if a.Auth == "" {
		a.Auth = AuthManagedIdentity
	}
	checkSecret := func(name string, s Secret, want bool) {
		n := 0
		for _, v := range []string{s.Value, s.Env, s.File} {
			if v != "" {
				n++
			}
		}
		switch {
		case want && n != 1:
			errs.Add(key+"."+name, "set exactly one of value, env, file for auth %s", a.Auth)
		case !want && n != 0:
			errs.Add(key+"."+name, "only used with auth %s; remove it", strings.ReplaceAll(name, "account_key", AuthSharedKey))
		}
	}
	needURL := true
	switch a.Auth {
	case AuthManagedIdentity:
	case AuthConnectionString:
		needURL = false
	case AuthSharedKey:
		if a.AccountName == "" {
			errs.Add(key+".account_name", "required for auth shared_key")
		}
	case AuthSAS:
	default:
		errs.Add(key+".auth", "%q must be managed_identity, connection_string, shared_key or sas", a.Auth)
	}
	checkSecret("connection_string", a.ConnectionString, a.Auth == AuthConnectionString)
	checkSecret("account_key", a.AccountKey, a.Auth == AuthSharedKey)
	// Inline secrets can be checked now; env and file ones only at run
	// time (where a bad one is reported and retried, not fatal). The
	// messages never quote the secret.
	if v := a.ConnectionString.Value; v != "" && a.Auth == AuthConnectionString {
		if _, err := azblob.NewClientFromConnectionString(v, nil); err != nil {
			errs.Add(key+".connection_string", "not a storage connection string (want AccountName=…;AccountKey=…;BlobEndpoint=… or DefaultEndpointsProtocol=…;EndpointSuffix=…, with a base64 key)")
		}
	}
	if v := a.AccountKey.Value; v != "" && a.Auth == AuthSharedKey {
		if _, err := base64.StdEncoding.DecodeString(v); err != nil {
			errs.Add(key+".account_key", "not base64 (an account key is the base64 text the portal shows)")
		}
	}
	checkSecret("sas", a.SAS, a.Auth == AuthSAS)
	switch {
	case a.ClientID != "" && a.Auth != AuthManagedIdentity:
		errs.Add(key+".client_id", "only used with auth managed_identity; remove it")
	case a.ClientID != "" && !guidRE.MatchString(a.ClientID):
		errs.Add(key+".client_id", "%q must be the user-assigned identity's client id, a GUID like 7d3a7c1e-0b6f-4e0a-9c55-2f1f6a0b9d41", a.ClientID)
	}
	switch {
	case needURL && a.URL == "":
		errs.Add(key+".url", "required, e.g. https://<account>.blob.core.windows.net/")
	case !needURL && a.URL != "":
		errs.Add(key+".url", "the connection string carries the endpoint; remove url")
	case a.URL != "":
		u, err := url.Parse(a.URL)
		switch {
		case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" ||
			strings.Contains(strings.ToLower(a.URL), "sig="):
			errs.Add(key+".url", "%q must be an http(s) URL without a query (put a SAS token in sas)", redactURL(a.URL))
		case a.Auth == AuthManagedIdentity && u.Scheme != "https":
			// azcore refuses to send a bearer token over plain HTTP: every
			// request would fail.
			errs.Add(key+".url", "%q must be https for auth managed_identity", redactURL(a.URL))
		}
	}
	if a.Lookback == 0 {
		a.Lookback = DefaultLookback
	}
	if a.Lookback < time.Hour || a.Lookback > 7*24*time.Hour {
		errs.Add(key+".lookback", "must be 1h to 168h, got %s", a.Lookback)
	} else if a.Lookback <= discovery {
		errs.Add(key+".lookback", "must be longer than discovery_interval (%s), got %s", discovery, a.Lookback)
	}
	if len(a.Containers) == 0 {
		errs.Add(key+".containers", "list at least one container, e.g. insights-logs-signinlogs")
	}
	seen := make(map[string]bool)
	for j := range a.Containers {
		c := &a.Containers[j]
		ck := fmt.Sprintf("%s.containers[%d]", key, j)
		if !containerRE.MatchString(c.Name) {
			errs.Add(ck+".name", "%q is not a container name (3-63 lowercase letters, digits and single '-')", c.Name)
		}
		if seen[c.Name] {
			errs.Add(ck+".name", "%q is listed twice; put all its prefixes in one entry", c.Name)
		}
		seen[c.Name] = true
		if len(c.Prefixes) == 0 {
			c.Prefixes = []string{""}
		}
		for k, pre := range c.Prefixes {
			if strings.Contains(pre, "y=") {
				errs.Add(fmt.Sprintf("%s.prefixes[%d]", ck, k), "%q must stop above the y=YYYY/ level; hours are chosen by lookback and start_time", pre)
			}
		}
	}
}

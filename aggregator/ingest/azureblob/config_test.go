package azureblob

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/outpost-siem/outpost/aggregator/config"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{Accounts: []Account{{Name: "a", URL: "https://a.blob.core.windows.net/", Containers: []Container{{Name: "insights-logs-signinlogs"}}}}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	a := c.Accounts[0]
	if c.PollInterval != DefaultPollInterval || c.Concurrency != DefaultConcurrency || c.MaxRecordSize != DefaultMaxRecordSize ||
		a.Auth != AuthManagedIdentity || a.Lookback != DefaultLookback || len(a.Containers[0].Prefixes) != 1 {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestConfigErrors(t *testing.T) {
	yaml := `
poll_interval: 10ms
accounts:
  - name: "bad name"
    auth: sas
    url: https://x.blob.core.windows.net/?sv=1
    account_key: {value: k}
    lookback: 30m
    containers:
      - name: Insights_Logs
        prefixes: ["tenantId=t/y=2026/"]
  - name: dup
    auth: connection_string
    connection_string: {value: a, env: B}
    containers: [{name: insights-activity-logs}]
  - name: dup
    auth: shared_key
    url: https://x.blob.core.windows.net/
    containers: []
`
	var c Config
	if err := config.DecodeStrict("test.yaml", []byte(yaml), &c); err != nil {
		t.Fatal(err)
	}
	err := c.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"ingest.azure_blob.poll_interval: must be at least 100ms",
		"ingest.azure_blob.accounts[0].name:",
		"ingest.azure_blob.accounts[0].sas: set exactly one",
		"ingest.azure_blob.accounts[0].account_key: only used with auth shared_key",
		"ingest.azure_blob.accounts[0].url:",
		"ingest.azure_blob.accounts[0].lookback:",
		"ingest.azure_blob.accounts[0].containers[0].name:",
		"ingest.azure_blob.accounts[0].containers[0].prefixes[0]:",
		"ingest.azure_blob.accounts[1].connection_string: set exactly one",
		"ingest.azure_blob.accounts[2].name: \"dup\" is used by another account",
		"ingest.azure_blob.accounts[2].account_name: required",
		"ingest.azure_blob.accounts[2].account_key: set exactly one",
		"ingest.azure_blob.accounts[2].containers: list at least one",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	a := Account{Name: "a", ConnectionString: Secret{Value: "AccountKey=hunter2"}, AccountKey: Secret{Value: "hunter2"}}
	var logs strings.Builder
	for _, h := range []slog.Handler{slog.NewTextHandler(&logs, nil), slog.NewJSONHandler(&logs, nil)} {
		slog.New(h).Info("config", "account", a, "key", a.AccountKey, "accounts", []Account{a})
	}
	for _, s := range []string{fmt.Sprint(a), fmt.Sprintf("%+v", a), fmt.Sprintf("%#v", a.AccountKey), fmt.Sprintf("%v", []Account{a}), logs.String()} {
		if strings.Contains(s, "hunter2") {
			t.Errorf("secret printed: %s", s)
		}
	}
}

func TestSecretResolve(t *testing.T) {
	t.Setenv("OUTPOST_TEST_SECRET", " s3cret \n")
	if v, err := (Secret{Env: "OUTPOST_TEST_SECRET"}).resolve("k"); err != nil || v != "s3cret" {
		t.Errorf("env: %q %v", v, err)
	}
	_, err := (Secret{Env: "OUTPOST_TEST_UNSET_SECRET"}).resolve("k")
	if err == nil || !strings.Contains(err.Error(), "OUTPOST_TEST_UNSET_SECRET") {
		t.Errorf("unset env: %v", err)
	}
}

func TestHourPrefix(t *testing.T) {
	if got := hourPrefix(time.Date(2026, 3, 2, 7, 59, 0, 0, time.UTC)); got != "y=2026/m=03/d=02/h=07/" {
		t.Errorf("hourPrefix = %q", got)
	}
}

// TestConfigRejectsBadSecrets: a malformed inline connection string or a
// non-base64 account key can never work; Validate (check-config) says so,
// without quoting them. Good ones pass.
func TestConfigRejectsBadSecrets(t *testing.T) {
	const goodKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
	account := func(auth string, cs, key Secret) Account {
		a := Account{Name: "a", Auth: auth, ConnectionString: cs, AccountKey: key, Containers: []Container{{Name: "insights-logs-signinlogs"}}}
		if auth == AuthSharedKey {
			a.URL, a.AccountName = "https://a.blob.core.windows.net/", "a"
		}
		return a
	}
	for _, tc := range []struct {
		name string
		a    Account
		want string // "" = valid
	}{
		{"malformed connection string", account(AuthConnectionString, Secret{Value: "hunter2 is not a connection string"}, Secret{}), "connection_string: not a storage connection string"},
		{"connection string with a non-base64 key", account(AuthConnectionString, Secret{Value: "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=hunter2!!;BlobEndpoint=http://127.0.0.1:10000/a;"}, Secret{}), "connection_string: not a storage connection string"},
		{"non-base64 account key", account(AuthSharedKey, Secret{}, Secret{Value: "hunter2!!"}), "account_key: not base64"},
		{"good connection string", account(AuthConnectionString, Secret{Value: "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=" + goodKey + ";BlobEndpoint=http://127.0.0.1:10000/a;"}, Secret{}), ""},
		{"good account key", account(AuthSharedKey, Secret{}, Secret{Value: goodKey}), ""},
		{"key from env, checked at run time", account(AuthSharedKey, Secret{}, Secret{Env: "OUTPOST_TEST_KEY"}), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{Accounts: []Account{tc.a}}
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("rejected: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want %q", err, tc.want)
			case err != nil && strings.Contains(err.Error(), "hunter2"):
				t.Errorf("the error quotes the secret: %v", err)
			}
		})
	}
}

package azureblob

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-siem/outpost/aggregator/bus"
	"github.com/outpost-siem/outpost/aggregator/event"
	"github.com/outpost-siem/outpost/aggregator/ingest/azureblob/azuritetest"
)

// Authentication against the real Azurite, which checks shared-key
// signatures and SAS signatures with the dev account's key. Managed
// identity needs Azure's instance metadata service and is not tested end
// to end (see TestManagedIdentityConfig).

// accountSAS is an account SAS (list and read on containers and blobs)
// signed with key, as `az storage account generate-sas` makes one.
func accountSAS(t *testing.T, key string) string {
	t.Helper()
	cred, err := azblob.NewSharedKeyCredential(azuritetest.Account, key)
	if err != nil {
		t.Fatal(err)
	}
	qp, err := sas.AccountSignatureValues{
		Protocol:      sas.ProtocolHTTPSandHTTP,
		StartTime:     time.Now().UTC().Add(-time.Minute),
		ExpiryTime:    time.Now().UTC().Add(time.Hour),
		Permissions:   (&sas.AccountPermissions{Read: true, List: true}).String(),
		ResourceTypes: (&sas.AccountResourceTypes{Container: true, Object: true}).String(),
	}.SignWithSharedKey(cred)
	if err != nil {
		t.Fatal(err)
	}
	return qp.Encode()
}

// containerSAS is a service SAS for one container with sp=rl, what
// docs/azure.md asks for.
func containerSAS(t *testing.T, container, key string) string {
	t.Helper()
	cred, err := azblob.NewSharedKeyCredential(azuritetest.Account, key)
	if err != nil {
		t.Fatal(err)
	}
	qp, err := sas.BlobSignatureValues{
		Protocol:      sas.ProtocolHTTPSandHTTP,
		StartTime:     time.Now().UTC().Add(-time.Minute),
		ExpiryTime:    time.Now().UTC().Add(time.Hour),
		Permissions:   (&sas.ContainerPermissions{Read: true, List: true}).String(),
		ContainerName: container,
	}.SignWithSharedKey(cred)
	if err != nil {
		t.Fatal(err)
	}
	return qp.Encode()
}

// sasSecrets are the forms in which a SAS token could leak: whole, and its
// signature as sent in the query and decoded.
func sasSecrets(t *testing.T, token string) []string {
	t.Helper()
	q, err := url.ParseQuery(token)
	if err != nil || q.Get("sig") == "" {
		t.Fatalf("not a SAS token: %q", token)
	}
	return []string{token, q.Get("sig"), url.QueryEscape(q.Get("sig"))}
}

func writeSecret(t *testing.T, name, value string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(value), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// nopSink is a sink for sources that must not deliver anything.
type nopSink struct{}

func (nopSink) PublishEvents(context.Context, []*event.Event) error { return nil }
func (nopSink) DeadLetter(context.Context, string, string, []byte, string) error {
	return nil
}

// logBuffer collects what a source logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestAuth reads one sign-in blob end to end with every kind of auth
// that works without Azure, with secrets given inline, by environment
// variable and by file. Each account has its own name, so each reads the
// blob anew and adds one event. The container is private: a source whose
// credential was not used would get 403 and deliver nothing.
func TestAuth(t *testing.T) {
	r := newRig(t)
	const cont = "insights-logs-signinlogs"
	r.createContainer(cont)
	now := time.Now().UTC()
	r.appendBlob(cont, hourPath("tenantId="+tenant+"/", now)+"PT1H.json", signInLine(1, now, "203.0.113.1", "0"))

	endpoint := r.endpoint()
	t.Setenv("OUTPOST_TEST_AZURE_KEY", azuritetest.Key)
	t.Setenv("OUTPOST_TEST_AZURE_SAS", "?"+containerSAS(t, cont, azuritetest.Key)) // with the '?' the portal shows
	cases := []struct {
		name string
		a    Account
	}{
		{"shared_key from file", Account{Auth: AuthSharedKey, URL: endpoint + "/", AccountName: azuritetest.Account,
			AccountKey: Secret{File: writeSecret(t, "account_key", azuritetest.Key+"\n")}}},
		{"shared_key from env", Account{Auth: AuthSharedKey, URL: endpoint, AccountName: azuritetest.Account,
			AccountKey: Secret{Env: "OUTPOST_TEST_AZURE_KEY"}}},
		{"account sas inline", Account{Auth: AuthSAS, URL: endpoint, SAS: Secret{Value: accountSAS(t, azuritetest.Key)}}},
		{"container sas from env", Account{Auth: AuthSAS, URL: endpoint + "/", SAS: Secret{Env: "OUTPOST_TEST_AZURE_SAS"}}},
		{"account sas from file", Account{Auth: AuthSAS, URL: endpoint, SAS: Secret{File: writeSecret(t, "sas", accountSAS(t, azuritetest.Key)+"\n")}}},
		{"connection_string from file", Account{Auth: AuthConnectionString, ConnectionString: Secret{File: writeSecret(t, "conn", r.conn)}}},
	}
	for i, tc := range cases {
		t.Logf("case %q", tc.name)
		a := tc.a
		a.Name = fmt.Sprintf("auth%d", i)
		a.Containers = []Container{{Name: cont, Prefixes: []string{"tenantId=" + tenant + "/"}}}
		cfg := r.config()
		cfg.Accounts = []Account{a}
		stop := r.start(cfg)
		r.waitCount(bus.StreamEvents, uint64(i+1))
		stop()
		if n := r.metric("outpost_azure_blob_polls_total", "result", "error"); n != 0 {
			t.Errorf("%s: %v failed polls", tc.name, n)
		}
	}
	senders := make(map[string]int)
	for _, ev := range r.events() {
		senders[strings.SplitN(ev.Sender, "/", 2)[0]]++
	}
	for i, tc := range cases {
		if n := senders[fmt.Sprintf("auth%d", i)]; n != 1 {
			t.Errorf("%s: %d events, want 1", tc.name, n)
		}
	}
}

// TestSecretsNeverLogged runs sources whose polls fail (a wrong key, a SAS
// signed with a wrong key, a valid SAS against an endpoint that refuses
// connections) with their log captured, and checks that the log reports
// the failure without any form of the secret. The third case leaked the
// SAS signature before redactURLs: net/http quotes the whole URL, query
// included, in a transport error.
func TestSecretsNeverLogged(t *testing.T) {
	r := newRig(t)
	const cont = "insights-logs-auditlogs"
	r.createContainer(cont)
	r.appendBlob(cont, hourPath("tenantId="+tenant+"/", time.Now().UTC())+"PT1H.json", "")
	r.tune = func(s *Source) { // fail fast: a few retries 10ms apart
		s.retry.RetryDelay, s.retry.MaxRetryDelay = 10*time.Millisecond, 50*time.Millisecond
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + l.Addr().String() + "/" + azuritetest.Account
	l.Close()

	wrongKey := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("not the key "), 6))
	badSAS, goodSAS := accountSAS(t, wrongKey), accountSAS(t, azuritetest.Key)
	cases := []struct {
		name    string
		a       Account
		secrets []string
		want    string // in the log: the failure is reported
	}{
		{"shared_key with a wrong key", Account{Auth: AuthSharedKey, URL: r.endpoint(), AccountName: azuritetest.Account, AccountKey: Secret{Value: wrongKey}},
			[]string{wrongKey}, "403"},
		{"connection_string with a wrong key", Account{Auth: AuthConnectionString, ConnectionString: Secret{Value: strings.Replace(r.conn, azuritetest.Key, wrongKey, 1)}},
			[]string{wrongKey}, "403"},
		{"sas signed with a wrong key", Account{Auth: AuthSAS, URL: r.endpoint(), SAS: Secret{Value: badSAS}},
			sasSecrets(t, badSAS), "403"},
		{"sas to an endpoint refusing connections", Account{Auth: AuthSAS, URL: refused, SAS: Secret{Value: goodSAS}},
			sasSecrets(t, goodSAS), "connection refused"},
	}
	for i, tc := range cases {
		t.Logf("case %q", tc.name)
		logs := &logBuffer{}
		r.logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		a := tc.a
		a.Name = fmt.Sprintf("bad%d", i)
		a.Containers = []Container{{Name: cont}}
		cfg := r.config()
		cfg.Accounts = []Account{a}
		stop := r.start(cfg)
		r.waitFor("a failed poll", func() bool { return r.metric("outpost_azure_blob_polls_total", "result", "error") >= 1 })
		stop()
		out := logs.String()
		if !strings.Contains(out, "azure blob poll failed") || !strings.Contains(out, tc.want) {
			t.Errorf("%s: the log does not report the failure (%q):\n%s", tc.name, tc.want, out)
		}
		for _, s := range tc.secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s: the log holds the secret %q:\n%s", tc.name, s, out)
			}
		}
	}
}

// TestSecretErrors: when Run cannot set an account up, its error says
// which key and where it looked, never the secret.
func TestSecretErrors(t *testing.T) {
	const secret = "c2VjcmV0LXNpZw%3D%3D"
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tc := range []struct {
		name string
		a    Account
		want string
	}{
		{"missing file", Account{Auth: AuthSharedKey, AccountName: "acct", AccountKey: Secret{File: missing}}, "accounts[0].account_key: reading secret file: open " + missing},
		{"empty file", Account{Auth: AuthSAS, SAS: Secret{File: writeSecret(t, "empty", "\n")}}, "accounts[0].sas: secret file"},
		{"unset env", Account{Auth: AuthSAS, SAS: Secret{Env: "OUTPOST_TEST_UNSET_SAS"}}, "environment variable OUTPOST_TEST_UNSET_SAS is not set"},
		{"sas URL instead of token", Account{Auth: AuthSAS, SAS: Secret{Value: "https://acct.blob.core.windows.net/?sv=2024-08-04&sp=rl&sig=" + secret}}, "not the SAS URL"},
		{"sas with a line break", Account{Auth: AuthSAS, SAS: Secret{Value: "sv=2024-08-04&sp=rl\n&sig=" + secret}}, "not a SAS token"},
		{"sas without sig", Account{Auth: AuthSAS, SAS: Secret{Value: "sv=2024-08-04&sp=rl&" + secret}}, "no sig parameter"},
		// From a file: an inline one is rejected by Validate already.
		{"key not base64", Account{Auth: AuthSharedKey, AccountName: "acct", AccountKey: Secret{File: writeSecret(t, "key", secret)}}, "accounts[0].account_key:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.a
			a.Name = "acct"
			if a.Auth != AuthConnectionString {
				a.URL = "https://acct.blob.core.windows.net/"
			}
			a.Containers = []Container{{Name: "insights-logs-auditlogs"}}
			db := openTestDB(t)
			s, err := New(Config{Accounts: []Account{a}}, nopSink{}, db, nil, prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err = s.Run(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %v, want an error with %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "c2VjcmV0LXNpZw") {
				t.Errorf("the error holds the secret: %v", err)
			}
		})
	}
}

// TestManagedIdentityConfig checks what can be checked of managed identity
// without Azure: the config rules, and that Run's client construction
// (azidentity's credential) does no I/O and fails on nothing. Getting a
// token needs the instance metadata service at 169.254.169.254, which only
// an Azure VM has; that path is untested here.
func TestManagedIdentityConfig(t *testing.T) {
	const guid = "7d3a7c1e-0b6f-4e0a-9c55-2f1f6a0b9d41"
	for _, tc := range []struct {
		name string
		a    Account
		want string // "" = valid
	}{
		{"system-assigned, auth defaulted", Account{URL: "https://logs.blob.core.windows.net/"}, ""},
		{"user-assigned", Account{Auth: AuthManagedIdentity, URL: "https://logs.blob.core.windows.net/", ClientID: guid}, ""},
		{"no url", Account{Auth: AuthManagedIdentity}, "accounts[0].url: required"},
		{"plain http", Account{URL: "http://logs.blob.core.windows.net/"}, "must be https for auth managed_identity"},
		{"client_id not a GUID", Account{URL: "https://logs.blob.core.windows.net/", ClientID: "outpost-vm"}, "accounts[0].client_id: \"outpost-vm\" must be"},
		{"client_id with another auth", Account{Auth: AuthSAS, URL: "https://logs.blob.core.windows.net/", SAS: Secret{Value: "sig=x"}, ClientID: guid}, "client_id: only used with auth managed_identity"},
		{"a key with managed identity", Account{URL: "https://logs.blob.core.windows.net/", AccountKey: Secret{Value: "k"}}, "account_key: only used with auth shared_key"},
		{"a SAS with managed identity", Account{URL: "https://logs.blob.core.windows.net/", SAS: Secret{Env: "SAS"}}, "sas: only used with auth sas"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.a
			a.Name = "prod"
			a.Containers = []Container{{Name: "insights-logs-signinlogs"}}
			c := Config{Accounts: []Account{a}}
			err := c.Validate()
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Validate = %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Accounts[0].Auth != AuthManagedIdentity {
				t.Errorf("auth = %q", c.Accounts[0].Auth)
			}
			if _, err := newServiceClient("k", c.Accounts[0], defaultRetry()); err != nil {
				t.Errorf("newServiceClient: %v", err)
			}
		})
	}
}

// A url carrying a SAS, in its query or pasted into its path, is refused,
// and the error shows it without the signature, as the logs do.
func TestConfigURLErrorRedactsSAS(t *testing.T) {
	for _, u := range []string{
		"https://x.blob.core.windows.net/?sv=2022-11-02&sp=rl&sig=SECRETSIG",
		"https://x.blob.core.windows.net/sv=2022-11-02&sp=rl&SIG=SECRETSIG",
		"http://x.blob.core.windows.net/?sig=SECRETSIG", // also not https, for managed identity
	} {
		c := Config{Accounts: []Account{{Name: "a", URL: u, Containers: []Container{{Name: "insights-logs-signinlogs"}}}}}
		err := c.Validate()
		if err == nil {
			t.Errorf("%s: accepted", u)
			continue
		}
		if strings.Contains(err.Error(), "SECRETSIG") || !strings.Contains(err.Error(), "[redacted]") {
			t.Errorf("%s: %v", u, err)
		}
	}
	for in, want := range map[string]string{
		"https://x/?a=1&sig=s":  "https://x/?[redacted]",
		"https://x/p&sig=s?a=1": "https://x/p&[redacted]",
		"https://x/container/b": "https://x/container/b",
		"https://x/c?comp=list": "https://x/c?[redacted]",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

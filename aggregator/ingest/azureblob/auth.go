package azureblob

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"
)

// resolve returns the secret's value. It reads the environment or the file,
// so it runs in Run, never in New. The error names where it looked, never
// the value.
func (s Secret) resolve(key string) (string, error) {
	switch {
	case s.Value != "":
		return s.Value, nil
	case s.Env != "":
		v, ok := os.LookupEnv(s.Env)
		if !ok || strings.TrimSpace(v) == "" {
			return "", fmt.Errorf("%s: environment variable %s is not set", key, s.Env)
		}
		return strings.TrimSpace(v), nil
	case s.File != "":
		b, err := os.ReadFile(s.File)
		if err != nil {
			return "", fmt.Errorf("%s: reading secret file: %w", key, err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("%s: secret file %s is empty", key, s.File)
		}
		return v, nil
	}
	return "", fmt.Errorf("%s: not set", key)
}

// defaultRetry: the SDK retries 429, 503 and transport errors itself
// (exponential, honouring Retry-After up to MaxRetryDelay) before an error
// reaches the poller, which then backs off the whole account.
func defaultRetry() policy.RetryOptions {
	return policy.RetryOptions{
		MaxRetries:    3,
		TryTimeout:    2 * time.Minute,
		RetryDelay:    time.Second,
		MaxRetryDelay: 30 * time.Second,
	}
}

func clientOptions(retry policy.RetryOptions) *azblob.ClientOptions {
	return &azblob.ClientOptions{ClientOptions: azcore.ClientOptions{
		Retry:           retry,
		Telemetry:       policy.TelemetryOptions{Disabled: true},
		PerCallPolicies: []policy.Policy{redactURLs{}},
	}}
}

// redactURLs keeps SAS tokens out of errors. On a transport failure
// (connection refused or reset, timeout) net/http returns a *url.Error
// that quotes the whole request URL, query included, and azcore passes it
// on as is; with auth sas, or a connection string carrying a SAS, that
// query holds the signature, and the poller logs the errors it gets. The
// policy runs outside the SDK's retries, so it sees the final error, and
// cuts the query off every *url.Error in it. (azcore.ResponseError, for a
// response, already prints the path only.)
type redactURLs struct{}

func (redactURLs) Do(req *policy.Request) (*http.Response, error) {
	resp, err := req.Next()
	var ue *url.Error
	for e := err; errors.As(e, &ue); e = ue.Err {
		ue.URL = redactURL(ue.URL)
	}
	return resp, err
}

// redactURL cuts the query off a URL for an error or a log: with a SAS it
// holds the signature. A "sig=" outside a query (a token pasted into the
// path) is cut off too.
func redactURL(u string) string {
	i := strings.IndexByte(u, '?')
	if j := strings.Index(strings.ToLower(u), "sig="); j >= 0 && (i < 0 || j < i) {
		return u[:j] + "[redacted]"
	}
	if i >= 0 {
		return u[:i] + "?[redacted]"
	}
	return u
}

// sasQuery checks a SAS token and returns it without a leading '?'. Its
// errors never quote the token.
func sasQuery(key, sas string) (string, error) {
	sas = strings.TrimPrefix(sas, "?")
	if strings.Contains(sas, "://") {
		return "", fmt.Errorf("%s: give the SAS token (the query string after '?'), not the SAS URL", key)
	}
	q, err := url.ParseQuery(sas)
	if err != nil || strings.ContainsFunc(sas, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", fmt.Errorf("%s: not a SAS token: want a URL query string such as sv=…&sp=rl&sig=…", key)
	}
	if q.Get("sig") == "" {
		return "", fmt.Errorf("%s: the SAS token has no sig parameter", key)
	}
	return sas, nil
}

// newServiceClient builds the account's client from its auth settings,
// reading secrets from env or files. Credentials do no network I/O until
// the first request.
func newServiceClient(key string, a Account, retry policy.RetryOptions) (*service.Client, error) {
	opts := clientOptions(retry)
	var (
		c   *azblob.Client
		err error
	)
	switch a.Auth {
	case AuthConnectionString:
		cs, rerr := a.ConnectionString.resolve(key + ".connection_string")
		if rerr != nil {
			return nil, rerr
		}
		c, err = azblob.NewClientFromConnectionString(cs, opts)
	case AuthSharedKey:
		k, rerr := a.AccountKey.resolve(key + ".account_key")
		if rerr != nil {
			return nil, rerr
		}
		cred, cerr := azblob.NewSharedKeyCredential(a.AccountName, k)
		if cerr != nil {
			return nil, fmt.Errorf("%s.account_key: %w", key, cerr)
		}
		c, err = azblob.NewClientWithSharedKeyCredential(a.URL, cred, opts)
	case AuthSAS:
		raw, rerr := a.SAS.resolve(key + ".sas")
		if rerr != nil {
			return nil, rerr
		}
		sas, rerr := sasQuery(key+".sas", raw)
		if rerr != nil {
			return nil, rerr
		}
		c, err = azblob.NewClientWithNoCredential(strings.TrimRight(a.URL, "/")+"/?"+sas, opts)
	default: // managed identity
		mio := &azidentity.ManagedIdentityCredentialOptions{}
		if a.ClientID != "" {
			mio.ID = azidentity.ClientID(a.ClientID)
		}
		cred, cerr := azidentity.NewManagedIdentityCredential(mio)
		if cerr != nil {
			return nil, fmt.Errorf("%s: managed identity: %w", key, cerr)
		}
		c, err = azblob.NewClient(a.URL, cred, opts)
	}
	if err != nil {
		// The SDK's errors quote neither keys nor connection strings.
		return nil, fmt.Errorf("%s: creating blob client: %w", key, err)
	}
	return c.ServiceClient(), nil
}

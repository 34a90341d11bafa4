package azureblob

import (
	"fmt"
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

// clientOptions: the SDK retries 429, 503 and transport errors itself
// (exponential, honouring Retry-After) before an error reaches the poller,
// which then backs off the whole account.
func clientOptions() *azblob.ClientOptions {
	return &azblob.ClientOptions{ClientOptions: azcore.ClientOptions{
		Retry: policy.RetryOptions{
			MaxRetries:    3,
			TryTimeout:    2 * time.Minute,
			RetryDelay:    time.Second,
			MaxRetryDelay: 30 * time.Second,
		},
		Telemetry: policy.TelemetryOptions{Disabled: true},
	}}
}

// newServiceClient builds the account's client from its auth settings,
// reading secrets from env or files. Credentials do no network I/O until
// the first request.
func newServiceClient(key string, a Account) (*service.Client, error) {
	opts := clientOptions()
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
		sas, rerr := a.SAS.resolve(key + ".sas")
		if rerr != nil {
			return nil, rerr
		}
		c, err = azblob.NewClientWithNoCredential(strings.TrimRight(a.URL, "/")+"/?"+strings.TrimPrefix(sas, "?"), opts)
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

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/outpost-siem/outpost/aggregator/pipeline"
	"github.com/spf13/cobra"
)

// apiClient asks a running outpost's HTTP endpoint, with what http.listen
// needs off loopback: https, a private CA, a bearer token.
type apiClient struct {
	addr      string // host:port (http) or https://host:port
	tokenFile string
	caFile    string
	insecure  bool
}

func (c *apiClient) flags(cmd *cobra.Command, what string) {
	cmd.Flags().StringVar(&c.addr, "addr", "127.0.0.1:9464", "the running outpost's http.listen address (https://HOST:PORT over TLS)"+what)
	cmd.Flags().StringVar(&c.tokenFile, "token-file", "", "a file whose first token line authenticates (http.token_file's format)")
	cmd.Flags().StringVar(&c.caFile, "ca-file", "", "the CA that signed outpost's http.tls certificate, if not a system one")
	cmd.Flags().BoolVar(&c.insecure, "insecure", false, "send the token over plain http to an address off loopback")
}

// get asks for path; the caller closes the body.
func (c *apiClient) get(ctx context.Context, path string) (*http.Response, error) {
	base := c.addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	client := &http.Client{Timeout: 30 * time.Second}
	if c.caFile != "" {
		pem, err := os.ReadFile(c.caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", c.caFile)
		}
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	req, err := http.NewRequestWithContext(ctx, "GET", base+path, nil)
	if err != nil {
		return nil, err
	}
	if c.tokenFile != "" {
		if u, err := url.Parse(base); err == nil && u.Scheme == "http" && !pipeline.IsLoopbackHost(u.Hostname()) && !c.insecure {
			return nil, fmt.Errorf("refusing to send the token over plain http to %s: use --addr https://… (or --insecure, on a network you trust)", u.Host)
		}
		tok, err := firstToken(c.tokenFile)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking outpost at %s (is http.listen set?): %w", c.addr, err)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		resp.Body.Close()
		return nil, fmt.Errorf("outpost at %s wants authentication: --token-file with one of http.token_file's tokens", c.addr)
	}
	return resp, nil
}

// firstToken reads the first token of a token file.
func firstToken(file string) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			return t, nil
		}
	}
	return "", fmt.Errorf("%s holds no token", file)
}

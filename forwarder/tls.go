package forwarder

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
)

// clientTLS builds the TLS client config of a tls destination. The server
// is always verified, against the pinned CA file if one is set (the system
// roots are then not trusted at all) and for the configured server name.
// Files are read here, once, in the constructor: a renewed client
// certificate needs a restart.
func clientTLS(d *Destination) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: d.TLS.ServerName}
	if d.TLS.MinVersion == "1.3" {
		c.MinVersion = tls.VersionTLS13
	}
	if c.ServerName == "" {
		host, _, _ := net.SplitHostPort(d.Address)
		c.ServerName = host
	}
	if d.TLS.CAFile != "" {
		pem, err := os.ReadFile(d.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file %s: no PEM certificate in it", d.TLS.CAFile)
		}
		c.RootCAs = pool
	}
	if d.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(d.TLS.CertFile, d.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading tls.cert_file/key_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Package grpctls is the TLS of Panorama's gRPC side, with the flags and
// the behaviour of Thanos': a role's gRPC server (StoreAPI, Info, Metadata
// and push-down share it) is plaintext unless given a certificate and key,
// and verifies client certificates when given a client CA; a federator's
// connections to its endpoints use TLS with --grpc-client-tls-secure
// (through Thanos' extgrpc.StoreClientTLSCredentials, as the Querier).
// Certificates are read by Thanos' own helpers (pkg/tls), which re-read a
// certificate and key when their files change, so a rotated certificate
// is picked up without a restart. Every file is checked when the role
// starts, so that a missing or unreadable file stops it with the flag's
// name instead of failing every connection later.
package grpctls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"time"

	"github.com/alecthomas/kingpin/v2"
	thanostls "github.com/thanos-io/thanos/pkg/tls"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/panorama-obs/panorama/internal/server"
)

// ServerConfig is the TLS of a gRPC server, Thanos' --grpc-server-tls-*.
type ServerConfig struct {
	// CertFile and KeyFile enable TLS; both or neither.
	CertFile, KeyFile string
	// ClientCAFile, when set, requires client certificates signed by it
	// (mutual TLS).
	ClientCAFile string
	// MinVersion is the lowest TLS version accepted: 1.0, 1.1, 1.2 or 1.3;
	// empty is 1.3, as in Thanos.
	MinVersion string
}

// Enabled tells whether the server uses TLS.
func (c ServerConfig) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" }

// AddServerFlags registers Thanos' server TLS flags on cmd.
func AddServerFlags(cmd *kingpin.CmdClause) *ServerConfig {
	c := &ServerConfig{}
	cmd.Flag("grpc-server-tls-cert", "TLS certificate of the gRPC server (PEM); with --grpc-server-tls-key enables TLS. Re-read when the file changes.").PlaceHolder("<path>").StringVar(&c.CertFile)
	cmd.Flag("grpc-server-tls-key", "TLS private key of the gRPC server (PEM).").PlaceHolder("<path>").StringVar(&c.KeyFile)
	cmd.Flag("grpc-server-tls-client-ca", "CA (PEM) that client certificates must be signed by; set, the gRPC server requires and verifies client certificates (mutual TLS).").PlaceHolder("<path>").StringVar(&c.ClientCAFile)
	cmd.Flag("grpc-server-tls-min-version", "Lowest TLS version the gRPC server accepts: 1.0, 1.1, 1.2 or 1.3.").Default("1.3").StringVar(&c.MinVersion)
	return c
}

// Check reads every file the configuration names, so that a bad one fails
// at start with the flag and the file.
func (c ServerConfig) Check() error {
	switch {
	case c.KeyFile != "" && c.CertFile == "":
		return fmt.Errorf("--grpc-server-tls-key=%s is given without --grpc-server-tls-cert", c.KeyFile)
	case c.CertFile != "" && c.KeyFile == "":
		return fmt.Errorf("--grpc-server-tls-cert=%s is given without --grpc-server-tls-key", c.CertFile)
	case c.ClientCAFile != "" && c.CertFile == "":
		return fmt.Errorf("--grpc-server-tls-client-ca=%s needs --grpc-server-tls-cert and --grpc-server-tls-key: client certificates are only asked for over TLS", c.ClientCAFile)
	}
	if !c.Enabled() {
		return nil
	}
	if c.MinVersion != "" {
		if _, err := thanostls.GetTlsVersion(c.MinVersion); err != nil {
			return fmt.Errorf("--grpc-server-tls-min-version: %w", err)
		}
	}
	if err := checkKeyPair("--grpc-server-tls-cert", c.CertFile, "--grpc-server-tls-key", c.KeyFile); err != nil {
		return err
	}
	if c.ClientCAFile != "" {
		if err := checkCA("--grpc-server-tls-client-ca", c.ClientCAFile); err != nil {
			return err
		}
	}
	return nil
}

// TLSConfig is the server's TLS configuration, nil without TLS.
func (c ServerConfig) TLSConfig(logger *slog.Logger) (*tls.Config, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	if !c.Enabled() {
		return nil, nil
	}
	minVersion := c.MinVersion
	if minVersion == "" {
		minVersion = "1.3"
	}
	cfg, err := thanostls.NewServerConfig(server.GoKitLogger(logger), c.CertFile, c.KeyFile, c.ClientCAFile, minVersion, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("gRPC server TLS: %w", err)
	}
	if cfg == nil {
		// Thanos' helper answers nil for a CA file without certificates;
		// Check has ruled that out, but never fall back to plaintext.
		return nil, errors.New("gRPC server TLS: no configuration")
	}
	return cfg, nil
}

// NewServer is a role's gRPC server: large messages allowed, the keepalive
// policy Thanos' clients need, and TLS as configured. The StoreAPI, Info,
// Metadata and push-down services are registered on it by the caller.
func NewServer(logger *slog.Logger, c ServerConfig) (*grpc.Server, error) {
	opts := []grpc.ServerOption{
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.MaxRecvMsgSize(math.MaxInt32),
		// Thanos' clients (a federator above, a Thanos Querier) ping every
		// 10s on a quiet stream; grpc-go's default policy would answer
		// that with GOAWAY.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	cfg, err := c.TLSConfig(logger)
	if err != nil {
		return nil, err
	}
	if cfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	return grpc.NewServer(opts...), nil
}

// ClientConfig is the TLS of a federator's connections to its endpoints,
// Thanos Querier's --grpc-client-*.
type ClientConfig struct {
	// Secure enables TLS; without it the other fields must be empty.
	Secure bool
	// SkipVerify accepts any server certificate.
	SkipVerify bool
	// CertFile and KeyFile are the client certificate, for servers that
	// require one; both or neither.
	CertFile, KeyFile string
	// CAFile verifies the servers' certificates; empty uses the system's
	// roots.
	CAFile string
	// ServerName is the name the servers' certificates must carry; empty
	// uses each endpoint's host.
	ServerName string
	// MinVersion is the lowest TLS version used; empty is Go's default.
	MinVersion string
}

// AddClientFlags registers the Thanos Querier's client TLS flags on cmd.
func AddClientFlags(cmd *kingpin.CmdClause) *ClientConfig {
	c := &ClientConfig{}
	cmd.Flag("grpc-client-tls-secure", "Use TLS on the gRPC connections to the endpoints (StoreAPI and push-down).").Default("false").BoolVar(&c.Secure)
	cmd.Flag("grpc-client-tls-skip-verify", "Do not verify the endpoints' certificates (self-signed, or signed by an unknown CA).").Default("false").BoolVar(&c.SkipVerify)
	cmd.Flag("grpc-client-tls-cert", "TLS certificate (PEM) the federator presents to endpoints that require one. Re-read when the file changes.").PlaceHolder("<path>").StringVar(&c.CertFile)
	cmd.Flag("grpc-client-tls-key", "Private key (PEM) of --grpc-client-tls-cert.").PlaceHolder("<path>").StringVar(&c.KeyFile)
	cmd.Flag("grpc-client-tls-ca", "CA (PEM) that verifies the endpoints' certificates; default the system's roots.").PlaceHolder("<path>").StringVar(&c.CAFile)
	cmd.Flag("grpc-client-server-name", "Name the endpoints' certificates must carry (default: each endpoint's host).").PlaceHolder("<name>").StringVar(&c.ServerName)
	cmd.Flag("grpc-client-tls-min-version", "Lowest TLS version used with the endpoints: 1.0, 1.1, 1.2 or 1.3.").Default("1.3").StringVar(&c.MinVersion)
	return c
}

// Check reads every file the configuration names, so that a bad one fails
// at start with the flag and the file.
func (c ClientConfig) Check() error {
	if !c.Secure {
		// Thanos ignores these without --grpc-client-tls-secure; a
		// federator that was meant to use TLS must not talk in the clear.
		for _, f := range []struct{ flag, v string }{
			{"--grpc-client-tls-cert", c.CertFile}, {"--grpc-client-tls-key", c.KeyFile},
			{"--grpc-client-tls-ca", c.CAFile}, {"--grpc-client-server-name", c.ServerName},
		} {
			if f.v != "" {
				return fmt.Errorf("%s=%s is given without --grpc-client-tls-secure", f.flag, f.v)
			}
		}
		if c.SkipVerify {
			return errors.New("--grpc-client-tls-skip-verify is given without --grpc-client-tls-secure")
		}
		return nil
	}
	switch {
	case c.KeyFile != "" && c.CertFile == "":
		return fmt.Errorf("--grpc-client-tls-key=%s is given without --grpc-client-tls-cert", c.KeyFile)
	case c.CertFile != "" && c.KeyFile == "":
		return fmt.Errorf("--grpc-client-tls-cert=%s is given without --grpc-client-tls-key", c.CertFile)
	}
	if c.MinVersion != "" {
		if _, err := thanostls.GetTlsVersion(c.MinVersion); err != nil {
			return fmt.Errorf("--grpc-client-tls-min-version: %w", err)
		}
	}
	if c.CertFile != "" {
		if err := checkKeyPair("--grpc-client-tls-cert", c.CertFile, "--grpc-client-tls-key", c.KeyFile); err != nil {
			return err
		}
	}
	if c.CAFile != "" {
		if err := checkCA("--grpc-client-tls-ca", c.CAFile); err != nil {
			return err
		}
	}
	return nil
}

func checkKeyPair(certFlag, certFile, keyFlag, keyFile string) error {
	for _, f := range []struct{ flag, path string }{{certFlag, certFile}, {keyFlag, keyFile}} {
		if _, err := os.ReadFile(f.path); err != nil {
			return fmt.Errorf("%s=%s: %w", f.flag, f.path, err)
		}
	}
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		return fmt.Errorf("%s=%s, %s=%s: %w", certFlag, certFile, keyFlag, keyFile, err)
	}
	return nil
}

func checkCA(flag, path string) error {
	pem, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s=%s: %w", flag, path, err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s=%s: no PEM certificate in the file", flag, path)
	}
	return nil
}

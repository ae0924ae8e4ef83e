package grpctls

import (
	"crypto/tls"
	"log/slog"
	"strings"
	"testing"

	"github.com/panorama-obs/panorama/internal/testenv"
)

func TestServerConfig(t *testing.T) {
	ca := testenv.NewCA(t)
	cert, key := ca.Server(t, "leaf")
	logger := slog.New(slog.DiscardHandler)

	cfg, err := ServerConfig{}.TLSConfig(logger)
	if err != nil || cfg != nil {
		t.Fatalf("no flags: %v, %v; want plaintext", cfg, err)
	}
	cfg, err = ServerConfig{CertFile: cert, KeyFile: key, ClientCAFile: ca.CertFile, MinVersion: "1.2"}.TLSConfig(logger)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ClientAuth != tls.RequireAndVerifyClientCert || cfg.ClientCAs == nil || cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("with a client CA: ClientAuth %v, MinVersion %x", cfg.ClientAuth, cfg.MinVersion)
	}
	cfg, err = ServerConfig{CertFile: cert, KeyFile: key}.TLSConfig(logger)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ClientAuth != tls.NoClientCert || cfg.MinVersion != tls.VersionTLS13 {
		t.Errorf("without a client CA: ClientAuth %v, MinVersion %x", cfg.ClientAuth, cfg.MinVersion)
	}

	for _, tc := range []struct {
		c    ServerConfig
		want string
	}{
		{ServerConfig{CertFile: cert, KeyFile: key, MinVersion: "1.4"}, "--grpc-server-tls-min-version: invalid TLS version: 1.4"},
		{ServerConfig{CertFile: cert, KeyFile: cert}, "--grpc-server-tls-cert=" + cert + ", --grpc-server-tls-key=" + cert},
		{ServerConfig{CertFile: cert}, "--grpc-server-tls-cert=" + cert + " is given without --grpc-server-tls-key"},
		{ServerConfig{ClientCAFile: ca.CertFile}, "--grpc-server-tls-client-ca=" + ca.CertFile + " needs --grpc-server-tls-cert"},
	} {
		if _, err := tc.c.TLSConfig(logger); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error saying %q", tc.c, err, tc.want)
		}
	}
}

func TestClientCheck(t *testing.T) {
	ca := testenv.NewCA(t)
	cert, key := ca.Client(t, "federator")
	for _, tc := range []struct {
		c    ClientConfig
		want string
	}{
		{ClientConfig{}, ""},
		{ClientConfig{Secure: true}, ""},
		{ClientConfig{Secure: true, CertFile: cert, KeyFile: key, CAFile: ca.CertFile, ServerName: "leaf", MinVersion: "1.3"}, ""},
		{ClientConfig{SkipVerify: true}, "--grpc-client-tls-skip-verify is given without --grpc-client-tls-secure"},
		{ClientConfig{CAFile: ca.CertFile}, "--grpc-client-tls-ca=" + ca.CertFile + " is given without --grpc-client-tls-secure"},
		{ClientConfig{Secure: true, CertFile: cert}, "--grpc-client-tls-cert=" + cert + " is given without --grpc-client-tls-key"},
		{ClientConfig{Secure: true, CAFile: key}, "--grpc-client-tls-ca=" + key + ": no PEM certificate"},
		{ClientConfig{Secure: true, MinVersion: "2"}, "--grpc-client-tls-min-version"},
	} {
		err := tc.c.Check()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.c, err, tc.want)
		}
	}
}

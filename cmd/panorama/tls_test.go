package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/panorama-obs/panorama/internal/testenv"
)

// TestMain runs the command itself when asked to, so that a test can start
// `panorama` as a user would and look at its exit status and error.
func TestMain(m *testing.M) {
	if args := os.Getenv("PANORAMA_TEST_RUN_MAIN"); args != "" {
		os.Args = append([]string{"panorama"}, strings.Split(args, "\x1f")...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runPanorama(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PANORAMA_TEST_RUN_MAIN="+strings.Join(args, "\x1f"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), stderr.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, stderr.String()
}

// TestGRPCTLSBadFiles: a missing certificate, or a key without its
// certificate, stops the role at start with an error naming the flag and
// the file.
func TestGRPCTLSBadFiles(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "collector.yml")
	if err := os.WriteFile(cfg, []byte("global:\n  external_labels:\n    cluster: east\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := testenv.NewCA(t)
	_, key := ca.Server(t, "leaf")
	missing := filepath.Join(dir, "missing.crt")
	collector := []string{"collector", "--config.file=" + cfg, "--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:0", "--grpc-address=127.0.0.1:0"}
	federator := []string{"federator", "--endpoint=127.0.0.1:1", "--web.listen-address=127.0.0.1:0", "--grpc-address=127.0.0.1:0"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append(collector, "--grpc-server-tls-cert="+missing, "--grpc-server-tls-key="+key), "--grpc-server-tls-cert=" + missing + ": open " + missing},
		{append(collector, "--grpc-server-tls-key="+key), "--grpc-server-tls-key=" + key + " is given without --grpc-server-tls-cert"},
		{append(federator, "--grpc-server-tls-cert="+missing, "--grpc-server-tls-key="+key), "--grpc-server-tls-cert=" + missing + ": open " + missing},
		{append(federator, "--grpc-client-tls-secure", "--grpc-client-tls-cert="+missing, "--grpc-client-tls-key="+key), "--grpc-client-tls-cert=" + missing + ": open " + missing},
		{append(federator, "--grpc-client-tls-secure", "--grpc-client-tls-key="+key), "--grpc-client-tls-key=" + key + " is given without --grpc-client-tls-cert"},
		{append(federator, "--grpc-client-tls-secure", "--grpc-client-tls-ca="+missing), "--grpc-client-tls-ca=" + missing + ": open " + missing},
	} {
		code, stderr := runPanorama(t, tc.args...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("panorama %s: exit %d, stderr:\n%s\nwant an error saying %q", strings.Join(tc.args, " "), code, stderr, tc.want)
		}
	}
}

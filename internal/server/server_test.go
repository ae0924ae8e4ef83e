package server

import (
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	"golang.org/x/crypto/bcrypt"
)

func newTestServer(t *testing.T, webConfig string) *Server {
	t.Helper()
	app := kingpin.New("test", "")
	cmd := app.Command("role", "")
	flags := AddFlags(cmd, ":0")
	args := []string{"role", "--web.listen-address=127.0.0.1:0"}
	if webConfig != "" {
		path := filepath.Join(t.TempDir(), "web.yml")
		if err := os.WriteFile(path, []byte(webConfig), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--web.config.file="+path)
	}
	if _, err := app.Parse(args); err != nil {
		t.Fatal(err)
	}
	s, err := New(promslog.NewNopLogger(), flags, NewRegistry("test"))
	if err != nil {
		t.Fatal(err)
	}
	go s.Run()
	t.Cleanup(func() { s.Shutdown(nil) })
	return s
}

func get(t *testing.T, c *http.Client, method, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	req.SetBasicAuth("alice", "pw")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServerEndpoints(t *testing.T) {
	s := newTestServer(t, "")
	base := "http://" + s.Addr()
	c := http.DefaultClient
	if code, _ := get(t, c, "GET", base+"/-/healthy"); code != 200 {
		t.Errorf("healthy: %d", code)
	}
	if code, body := get(t, c, "GET", base+"/debug/pprof/heap?debug=1"); code != 200 || !strings.Contains(body, "heap profile") {
		t.Errorf("GET /debug/pprof/heap = %d %.80q, want 200 and a heap profile", code, body)
	}
	if code, _ := get(t, c, "GET", base+"/-/ready"); code != 503 {
		t.Errorf("ready before SetReady: %d", code)
	}
	s.SetReady(true)
	if code, _ := get(t, c, "GET", base+"/-/ready"); code != 200 {
		t.Errorf("ready: %d", code)
	}
	if code, body := get(t, c, "GET", base+"/metrics"); code != 200 || !strings.Contains(body, `panorama_build_info{component="test"`) {
		t.Errorf("metrics: %d %s", code, body)
	}
	if code, _ := get(t, c, "POST", base+"/-/reload"); code != 500 {
		t.Errorf("reload without a reload function: %d", code)
	}
	calls := 0
	s.OnReload(func() error { calls++; return nil })
	if code, _ := get(t, c, "GET", base+"/-/reload"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET reload: %d", code)
	}
	if code, _ := get(t, c, "POST", base+"/-/reload"); code != 200 || calls != 1 {
		t.Errorf("reload: %d, calls %d", code, calls)
	}
	s.OnReload(func() error { return errors.New("line 3: bad") })
	if code, body := get(t, c, "POST", base+"/-/reload"); code != 500 || !strings.Contains(body, "line 3: bad") {
		t.Errorf("failed reload: %d %s", code, body)
	}
	if _, body := get(t, c, "GET", base+"/metrics"); !strings.Contains(body, "panorama_config_last_reload_successful 0") {
		t.Errorf("failed reload not recorded")
	}
}

func TestServerTLSAndBasicAuth(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeSelfSigned(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, "tls_server_config:\n  cert_file: "+cert+"\n  key_file: "+key+"\nbasic_auth_users:\n  alice: "+string(hash)+"\n")
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if code, _ := get(t, c, "GET", "https://"+s.Addr()+"/-/healthy"); code != 200 {
		t.Errorf("healthy over TLS with auth: %d", code)
	}
	resp, err := c.Get("https://" + s.Addr() + "/-/healthy")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without credentials: %d", resp.StatusCode)
	}
}

func TestServerRejectsBadWebConfig(t *testing.T) {
	app := kingpin.New("test", "")
	cmd := app.Command("role", "")
	flags := AddFlags(cmd, ":0")
	path := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(path, []byte("tls_server_config:\n  cert_file: /nonexistent\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Parse([]string{"role", "--web.listen-address=127.0.0.1:0", "--web.config.file=" + path}); err != nil {
		t.Fatal(err)
	}
	_, err := New(promslog.NewNopLogger(), flags, NewRegistry("test"))
	if err == nil || !strings.Contains(err.Error(), "--web.config.file="+path) {
		t.Fatalf("error %v does not name the file", err)
	}
}

// TestSignalActorTakesSignalsFromTheCall: a SIGTERM that comes after
// SignalActor is called but before the run group has started the actor
// (which it does concurrently with the server) stops the actor gracefully
// instead of killing the process (this test's, then).
func TestSignalActorTakesSignalsFromTheCall(t *testing.T) {
	s := newTestServer(t, "")
	execute, interrupt := s.SignalActor()
	defer interrupt(nil)
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Let the signal arrive before the actor runs.
	time.Sleep(100 * time.Millisecond)
	done := make(chan error, 1)
	go func() { done <- execute() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("actor: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the SIGTERM sent before the actor ran did not stop it")
	}
}

package elasticsearch

import (
	"reflect"
	"testing"
	"time"

	"github.com/alecthomas/kingpin/v2"
)

func TestAddFlags(t *testing.T) {
	app := kingpin.New("test", "")
	cmd := app.Command("tracing", "")
	var cfg Config
	cfg.AddFlags(cmd)
	if _, err := app.Parse([]string{"tracing",
		"--es.server-urls=http://a:9200, http://b:9200",
		"--es.username=u", "--es.password-file=/pw", "--es.api-key-file=/key",
		"--es.tls.ca-file=/ca", "--es.tls.cert-file=/c", "--es.tls.key-file=/k", "--es.tls.insecure-skip-verify",
		"--es.num-shards=3", "--es.num-replicas=0", "--es.retention=7d", "--es.bulk.refresh=wait_for",
	}); err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.ServerURLs = []string{"http://a:9200", "http://b:9200"}
	want.Username, want.PasswordFile, want.APIKeyFile = "u", "/pw", "/key"
	want.TLS = TLSConfig{CAFile: "/ca", CertFile: "/c", KeyFile: "/k", InsecureSkipVerify: true}
	want.Shards, want.Replicas = 3, 0
	want.Retention = 7 * 24 * time.Hour
	want.Refresh = "wait_for"
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("flags gave\n%+v\nwant\n%+v", cfg, want)
	}

	app = kingpin.New("test", "")
	cmd = app.Command("tracing", "")
	var defaults Config
	defaults.AddFlags(cmd)
	if _, err := app.Parse([]string{"tracing"}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(defaults, DefaultConfig()) {
		t.Errorf("defaults from flags\n%+v\nwant DefaultConfig()\n%+v", defaults, DefaultConfig())
	}
}

package elasticsearch

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/model"
)

// Config configures the Elasticsearch span store.
type Config struct {
	// ServerURLs are the Elasticsearch nodes, e.g. http://es-0:9200.
	ServerURLs []string
	// IndexPrefix starts every index and template name: <prefix>-span-*,
	// <prefix>-service-*, <prefix>-dependencies-*.
	IndexPrefix string
	// Username and the password in PasswordFile give basic auth.
	Username     string
	PasswordFile string
	// APIKeyFile holds an API key in the encoded form Elasticsearch returns
	// (base64 of id:api_key); it takes precedence over basic auth.
	APIKeyFile string
	TLS        TLSConfig
	// Shards and Replicas set the daily indices' number_of_shards and
	// number_of_replicas.
	Shards, Replicas int
	// Retention deletes daily indices whose whole day is older than this;
	// zero keeps everything.
	Retention time.Duration
	// RetentionInterval is how often old indices are looked for.
	RetentionInterval time.Duration

	// BulkMaxBytes bounds the body of one _bulk request (the bulk
	// indexer's FlushBytes); larger writes are split.
	BulkMaxBytes int
	// BulkWorkers is the number of the bulk indexer's workers, shared by
	// all writes: how many _bulk requests the store sends at once.
	BulkWorkers int
	// BulkMaxAttempts bounds how often an item rejected with 429 or 5xx is
	// sent before WriteTraces gives up and returns a retryable error.
	BulkMaxAttempts int
	// BulkBackoff is the wait before the second attempt; it doubles for
	// each further attempt, up to 5 s.
	BulkBackoff time.Duration
	// Refresh is the _bulk refresh parameter: "" (the index's refresh
	// interval decides when spans become searchable), "wait_for" or "true".
	Refresh string
	// RequestTimeout bounds each HTTP request.
	RequestTimeout time.Duration
	// PageSize is the number of hits one search page returns (at most
	// index.max_result_window, 10000 by default).
	PageSize int
}

// TLSConfig configures TLS to Elasticsearch.
type TLSConfig struct {
	CAFile, CertFile, KeyFile string
	InsecureSkipVerify        bool
}

// DefaultConfig returns the defaults the flags also use.
func DefaultConfig() Config {
	return Config{
		IndexPrefix:       "panorama",
		Shards:            5,
		Replicas:          1,
		RetentionInterval: time.Hour,
		BulkMaxBytes:      5 << 20,
		BulkWorkers:       2,
		BulkMaxAttempts:   5,
		BulkBackoff:       100 * time.Millisecond,
		RequestTimeout:    30 * time.Second,
		PageSize:          10000,
	}
}

// AddFlags registers the --es.* flags on cmd, defaulting to DefaultConfig.
func (c *Config) AddFlags(cmd *kingpin.CmdClause) {
	d := DefaultConfig()
	cmd.Flag("es.server-urls", "Comma-separated Elasticsearch URLs (e.g. http://es:9200). Empty: use the embedded store.").
		SetValue(serverURLsFlag{c})
	cmd.Flag("es.index-prefix", "Prefix of the Elasticsearch index and template names.").Default(d.IndexPrefix).StringVar(&c.IndexPrefix)
	cmd.Flag("es.username", "Username for basic auth to Elasticsearch.").StringVar(&c.Username)
	cmd.Flag("es.password-file", "File holding the password for --es.username.").StringVar(&c.PasswordFile)
	cmd.Flag("es.api-key-file", "File holding an Elasticsearch API key (the base64 'encoded' value); takes precedence over basic auth.").StringVar(&c.APIKeyFile)
	cmd.Flag("es.tls.ca-file", "CA certificate(s) (PEM) to verify Elasticsearch with.").StringVar(&c.TLS.CAFile)
	cmd.Flag("es.tls.cert-file", "Client certificate (PEM) for TLS to Elasticsearch.").StringVar(&c.TLS.CertFile)
	cmd.Flag("es.tls.key-file", "Client key (PEM) for --es.tls.cert-file.").StringVar(&c.TLS.KeyFile)
	cmd.Flag("es.tls.insecure-skip-verify", "Do not verify Elasticsearch's certificate.").BoolVar(&c.TLS.InsecureSkipVerify)
	cmd.Flag("es.num-shards", "number_of_shards of each daily index.").Default(fmt.Sprint(d.Shards)).IntVar(&c.Shards)
	cmd.Flag("es.num-replicas", "number_of_replicas of each daily index.").Default(fmt.Sprint(d.Replicas)).IntVar(&c.Replicas)
	cmd.Flag("es.retention", "Delete daily indices whose whole day is older than this (e.g. 7d); 0 keeps everything.").Default("0s").SetValue(retentionFlag{&c.Retention})
	cmd.Flag("es.bulk.workers", "Bulk indexer workers: concurrent _bulk requests, shared by all writes.").Default(fmt.Sprint(d.BulkWorkers)).IntVar(&c.BulkWorkers)
	cmd.Flag("es.bulk.max-bytes", "Largest _bulk request body in bytes.").Default(fmt.Sprint(d.BulkMaxBytes)).IntVar(&c.BulkMaxBytes)
	cmd.Flag("es.bulk.max-attempts", "Attempts for bulk items Elasticsearch rejects with 429 or 5xx before the write fails (and is retried by the queue).").Default(fmt.Sprint(d.BulkMaxAttempts)).IntVar(&c.BulkMaxAttempts)
	cmd.Flag("es.bulk.refresh", "The _bulk refresh parameter: '' (default), 'wait_for' or 'true'.").Default("").EnumVar(&c.Refresh, "", "false", "wait_for", "true")
	cmd.Flag("es.request-timeout", "Timeout of each request to Elasticsearch.").Default(d.RequestTimeout.String()).DurationVar(&c.RequestTimeout)
	c.RetentionInterval = d.RetentionInterval
	c.BulkBackoff = d.BulkBackoff
	c.PageSize = d.PageSize
}

// serverURLsFlag parses the comma list of --es.server-urls into the Config.
type serverURLsFlag struct{ c *Config }

func (f serverURLsFlag) Set(v string) error {
	f.c.ServerURLs = nil
	for _, u := range strings.Split(v, ",") {
		if u = strings.TrimSpace(u); u != "" {
			f.c.ServerURLs = append(f.c.ServerURLs, u)
		}
	}
	return nil
}

func (f serverURLsFlag) String() string { return strings.Join(f.c.ServerURLs, ",") }

// retentionFlag parses Prometheus-style durations (7d, 2w) into a
// time.Duration.
type retentionFlag struct{ d *time.Duration }

func (f retentionFlag) Set(v string) error {
	d, err := model.ParseDuration(v)
	if err != nil {
		return err
	}
	*f.d = time.Duration(d)
	return nil
}

func (f retentionFlag) String() string { return model.Duration(*f.d).String() }

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.IndexPrefix == "" {
		c.IndexPrefix = d.IndexPrefix
	}
	if c.Shards <= 0 {
		c.Shards = d.Shards
	}
	if c.Replicas < 0 {
		c.Replicas = d.Replicas
	}
	if c.RetentionInterval <= 0 {
		c.RetentionInterval = d.RetentionInterval
	}
	if c.BulkMaxBytes <= 0 {
		c.BulkMaxBytes = d.BulkMaxBytes
	}
	if c.BulkWorkers <= 0 {
		c.BulkWorkers = d.BulkWorkers
	}
	if c.BulkMaxAttempts <= 0 {
		c.BulkMaxAttempts = d.BulkMaxAttempts
	}
	if c.BulkBackoff <= 0 {
		c.BulkBackoff = d.BulkBackoff
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	if c.PageSize <= 0 || c.PageSize > 10000 {
		c.PageSize = d.PageSize
	}
	if c.Refresh == "false" {
		c.Refresh = ""
	}
	return c
}

// credentials reads the password and API key files.
func (c Config) credentials() (password, apiKey string, err error) {
	if c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return "", "", fmt.Errorf("read --es.password-file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	if c.APIKeyFile != "" {
		b, err := os.ReadFile(c.APIKeyFile)
		if err != nil {
			return "", "", fmt.Errorf("read --es.api-key-file: %w", err)
		}
		apiKey = strings.TrimSpace(string(b))
		if apiKey == "" {
			return "", "", fmt.Errorf("--es.api-key-file %s is empty", c.APIKeyFile)
		}
	}
	return password, apiKey, nil
}

// transport builds the HTTP transport with the TLS settings.
func (c Config) transport() (*http.Transport, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 2 * c.BulkWorkers
	t.ResponseHeaderTimeout = c.RequestTimeout
	tc := &tls.Config{InsecureSkipVerify: c.TLS.InsecureSkipVerify} //nolint:gosec // the operator's explicit choice
	if c.TLS.CAFile != "" {
		pem, err := os.ReadFile(c.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read --es.tls.ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--es.tls.ca-file %s holds no PEM certificate", c.TLS.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.TLS.CertFile != "" || c.TLS.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load --es.tls.cert-file/--es.tls.key-file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	t.TLSClientConfig = tc
	return t, nil
}

package etcdstore

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Config configures the etcd store.
type Config struct {
	// Endpoints are the etcd client URLs (http://host:port or https://host:port; host:port means
	// http unless TLS files are given).
	Endpoints []string
	// DialTimeout bounds Open: reaching etcd and creating or reading the cluster ID.
	DialTimeout time.Duration
	// RequestTimeout bounds every request to etcd, on top of the caller's context.
	RequestTimeout time.Duration
	// CAFile verifies etcd's serving certificate; CertFile and KeyFile are the client
	// certificate etcd may require. All optional; any of them turns TLS on.
	CAFile, CertFile, KeyFile string
	// Prefix is put before every key, so one etcd can hold several tether clusters. It starts with
	// "/", does not end with "/" and holds no "!" (the store's own keys are Prefix + "!name").
	// Prefixes of clusters sharing an etcd must not be prefixes of one another's Prefix + "/".
	Prefix string
	// History is how many etcd revisions of change history before the store's last change are
	// kept for Watch when this store compacts. Revisions are etcd's, so on a shared etcd they
	// count other clusters' writes too.
	History int64
	// CompactInterval is how often the store compacts etcd to History revisions behind its last
	// change.
	// 0 leaves compaction to the operator (etcd's --auto-compaction-* or a cron of etcdctl
	// compact); the store then learns what was compacted from etcd itself.
	CompactInterval time.Duration
	// WatchBuffer is how many undelivered events a watcher may have before it is dropped with
	// store.ErrSlowWatcher.
	WatchBuffer int
	// ListPage is how many keys one range request reads; a longer List reads several pages at
	// the first page's revision, so the result is still one consistent snapshot.
	ListPage int
	// ReplaceClusterID, if the cluster's ID is this one, gives it a new one at Open, as after
	// restoring etcd from a backup: edges' cursors then belong to another history, and each
	// gets a full reset. The swap is a compare-and-swap on the old ID, so replicas started with
	// it together, or again later, replace it once. Replicas running meanwhile keep the old ID
	// (each reads it at Open): stop them all first.
	ReplaceClusterID string
}

// DefaultConfig returns the defaults for the given endpoints.
func DefaultConfig(endpoints ...string) Config {
	return Config{
		Endpoints:       endpoints,
		DialTimeout:     10 * time.Second,
		RequestTimeout:  10 * time.Second,
		Prefix:          "/tether",
		History:         100_000,
		CompactInterval: 5 * time.Minute,
		WatchBuffer:     200_000,
		ListPage:        5000,
	}
}

// Validate reports the first unusable setting.
func (c Config) Validate() error {
	if len(c.Endpoints) == 0 {
		return errors.New("etcdstore: no endpoints")
	}
	for _, e := range c.Endpoints {
		if strings.TrimSpace(e) == "" {
			return errors.New("etcdstore: an endpoint is empty")
		}
	}
	switch {
	case c.DialTimeout <= 0:
		return fmt.Errorf("etcdstore: dial timeout must be positive, got %s", c.DialTimeout)
	case c.RequestTimeout <= 0:
		return fmt.Errorf("etcdstore: request timeout must be positive, got %s", c.RequestTimeout)
	case (c.CertFile == "") != (c.KeyFile == ""):
		return errors.New("etcdstore: give both the client certificate and its key, or neither")
	case !strings.HasPrefix(c.Prefix, "/") || strings.HasSuffix(c.Prefix, "/") || strings.Contains(c.Prefix, "!"):
		return fmt.Errorf("etcdstore: prefix %q must start with /, not end with / and hold no !", c.Prefix)
	case c.History < 1:
		return fmt.Errorf("etcdstore: history must be at least 1, got %d", c.History)
	case c.CompactInterval < 0:
		return fmt.Errorf("etcdstore: compact interval must not be negative, got %s", c.CompactInterval)
	case c.WatchBuffer < 1:
		return fmt.Errorf("etcdstore: watch buffer must be at least 1, got %d", c.WatchBuffer)
	case c.ListPage < 1:
		return fmt.Errorf("etcdstore: list page must be at least 1, got %d", c.ListPage)
	}
	return nil
}

// tlsConfig returns the client TLS settings, or nil for plain connections.
func (c Config) tlsConfig() (*tls.Config, error) {
	https := false
	for _, e := range c.Endpoints {
		https = https || strings.HasPrefix(e, "https://")
	}
	if c.CAFile == "" && c.CertFile == "" && !https {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcdstore: CA file: %w", err)
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcdstore: CA file %s holds no PEM certificate", c.CAFile)
		}
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcdstore: client certificate: %w", err)
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

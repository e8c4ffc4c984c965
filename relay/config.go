package relay

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hwsigner/signer/keyfile"
	"github.com/hwsigner/signer/protocol"
)

// Defaults of Config.
const (
	DefaultListen         = "127.0.0.1:8480"
	DefaultMaxBodyBytes   = 64 << 10
	DefaultHistoryMaxAge  = 7 * 24 * time.Hour
	DefaultHistoryDedup   = 24 * time.Hour
	DefaultDLQMaxAge      = 30 * 24 * time.Hour
	DefaultWebhookTimeout = 10 * time.Second
	DefaultWebhookMaxAge  = 24 * time.Hour
	DefaultInitialBackoff = time.Second
	DefaultMaxBackoff     = 5 * time.Minute
	DefaultConcurrency    = 8
	DefaultPublishTimeout = 5 * time.Second
	// WebSocket defaults (GET /v1/ws).
	DefaultWSSendQueue    = 256
	DefaultWSPingInterval = 20 * time.Second
	DefaultWSWriteTimeout = 10 * time.Second
	// DefaultHold: how long the relay collects the node results of one
	// request before it decides an undecided request as TIMEOUT (twice the
	// Go client's default request TTL, so that a request still running on
	// the nodes is not given up early).
	DefaultHold = 10 * time.Minute
	// minSigners: fewer than two signers is no threshold at all (signerd
	// refuses it too, signer/config.MinSigners).
	minSigners = 2
)

// Config is signer-relay's YAML configuration (docs/signer-relay.example.yaml).
// Secrets are never in it: only sources (file:/path, env:NAME, cred:NAME)
// read with secret.Read.
type Config struct {
	Listen string `yaml:"listen"`
	TLS    struct {
		CertFile string `yaml:"cert_file"`
		KeyFile  string `yaml:"key_file"`
	} `yaml:"tls"`
	// MaxBodyBytes bounds a request body (default 64 KiB).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// PublishTimeout bounds the wait for JetStream's publish ack.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// NATS is the relay's own connection: its history and dead-letter
	// streams. A client without a nats section uses it too.
	NATS    NATSConfig `yaml:"nats"`
	Streams struct {
		// Storage: "file" (default) or "memory" (tests only).
		Storage       string        `yaml:"storage"`
		Replicas      int           `yaml:"replicas"`
		HistoryMaxAge time.Duration `yaml:"history_max_age"`
		// HistoryDuplicates: dedup window of RELAY_RESULTS (a result
		// redelivered after a relay crash is stored once).
		HistoryDuplicates time.Duration `yaml:"history_duplicates"`
		DLQMaxAge         time.Duration `yaml:"dlq_max_age"`
	} `yaml:"streams"`
	// WebSocket bounds each GET /v1/ws connection.
	WebSocket WebSocketConfig `yaml:"websocket"`
	// Cluster names the signer nodes whose results the relay attests
	// before anything reaches a webhook, SSE or long poll. Required.
	Cluster ClusterConfig            `yaml:"cluster"`
	Clients map[string]*ClientConfig `yaml:"clients"`
}

// WebSocketConfig bounds the WebSocket connections (GET /v1/ws).
type WebSocketConfig struct {
	// SendQueue: decisions waiting to be written to one connection. A
	// reader that leaves it full for WriteTimeout is disconnected (close
	// code 1008): a slow reader never grows the relay's memory. It reconnects with
	// ?after=<last cursor> and loses nothing.
	SendQueue int `yaml:"send_queue"`
	// PingInterval: how often the relay pings; a peer that does not answer
	// within WriteTimeout is disconnected.
	PingInterval time.Duration `yaml:"ping_interval"`
	// WriteTimeout bounds one write (a message or a ping); a write that
	// takes longer disconnects the peer as a slow reader.
	WriteTimeout time.Duration `yaml:"write_timeout"`
}

// ClusterConfig is what the relay needs to attest results exactly like the
// Go client: the nodes' identity public keys and how many of them must
// agree.
type ClusterConfig struct {
	// Peers: node ID -> the node's identity public key (PEM or base64
	// PKIX), the same list as signerd's peers (signerctl identity prints
	// each). Every node of the cluster: a keygen is attested only when
	// every one of them reports the same public keys.
	Peers map[string]string `yaml:"peers"`
	// Signers: t+1, how many distinct nodes must report the same sign or
	// reshare outcome (or an error): signerd's threshold.
	Signers int `yaml:"signers"`
	// Hold: how long the relay collects a request's node results before
	// it decides an undecided request as TIMEOUT (default 10m). At most
	// streams.history_duplicates, so that a decision made again after a
	// relay restart is stored once.
	Hold time.Duration `yaml:"hold"`
}

// NATSConfig names a NATS server and the credentials to use.
type NATSConfig struct {
	URL       string `yaml:"url"`
	CredsFile string `yaml:"creds_file"`
	TLS       struct {
		CAFile   string `yaml:"ca_file"`
		CertFile string `yaml:"cert_file"`
		KeyFile  string `yaml:"key_file"`
	} `yaml:"tls"`
	// InboxPrefix: replies come here (default _INBOX_<clientID> for a
	// client connection, _INBOX for the relay's own).
	InboxPrefix string `yaml:"inbox_prefix"`
}

// ClientConfig is one clientID served by the relay.
type ClientConfig struct {
	// TokenSource holds the client's bearer tokens, one per line (several
	// during a rotation): file:/path, env:NAME or cred:NAME.
	TokenSource string `yaml:"token_source"`
	// PublicKeys: the client's request-signing keys (PEM or base64 PKIX,
	// Ed25519 or P-256); the relay never holds a private key.
	PublicKeys []string `yaml:"public_keys"`
	// NATS: the client's own NATS user (its permissions allow only its own
	// result subjects). Empty URL: the relay's connection.
	NATS    NATSConfig     `yaml:"nats"`
	Webhook *WebhookConfig `yaml:"webhook"`
}

// WebhookConfig turns on Standard Webhooks delivery for a client.
type WebhookConfig struct {
	URL string `yaml:"url"`
	// SecretSource yields "whsec_<base64>": symmetric signatures "v1,"
	// (HMAC-SHA256). Optional when SigningKeySource is set.
	SecretSource string `yaml:"secret_source"`
	// PreviousSecretSource: the secret being rotated out. Until
	// PreviousSecretUntil each delivery carries a "v1," signature under
	// both secrets, so receivers can switch at any time in the overlap.
	PreviousSecretSource string    `yaml:"previous_secret_source"`
	PreviousSecretUntil  time.Time `yaml:"previous_secret_until"`
	// SigningKeySource yields "whsk_<base64>" (an Ed25519 seed of 32 bytes
	// or private key of 64): asymmetric signatures "v1a,". Receivers get
	// the public key ("whpk_<base64>") from GET /v1/webhook-key.
	SigningKeySource string        `yaml:"signing_key_source"`
	Timeout          time.Duration `yaml:"timeout"`
	MaxAge           time.Duration `yaml:"max_age"`
	InitialBackoff   time.Duration `yaml:"initial_backoff"`
	MaxBackoff       time.Duration `yaml:"max_backoff"`
	Concurrency      int           `yaml:"concurrency"`
}

// ParseConfig decodes a YAML config strictly (unknown keys are errors),
// fills defaults and checks it.
func ParseConfig(data []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := c.Check(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Check fills defaults and validates c.
func (c *Config) Check() error {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return errors.New("config: tls.cert_file and tls.key_file go together")
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxBodyBytes > protocol.MaxMessageSize {
		return fmt.Errorf("config: max_body_bytes above %d (protocol.MaxMessageSize)", protocol.MaxMessageSize)
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.WebSocket.SendQueue <= 0 {
		c.WebSocket.SendQueue = DefaultWSSendQueue
	}
	if c.WebSocket.PingInterval <= 0 {
		c.WebSocket.PingInterval = DefaultWSPingInterval
	}
	if c.WebSocket.WriteTimeout <= 0 {
		c.WebSocket.WriteTimeout = DefaultWSWriteTimeout
	}
	if c.NATS.URL == "" {
		return errors.New("config: nats.url missing")
	}
	if err := c.NATS.check("nats"); err != nil {
		return err
	}
	s := &c.Streams
	switch s.Storage {
	case "", "file", "memory":
	default:
		return fmt.Errorf("config: streams.storage %q, want file or memory", s.Storage)
	}
	if s.Replicas <= 0 {
		s.Replicas = 1
	}
	if s.HistoryMaxAge <= 0 {
		s.HistoryMaxAge = DefaultHistoryMaxAge
	}
	if s.HistoryDuplicates <= 0 {
		s.HistoryDuplicates = min(DefaultHistoryDedup, s.HistoryMaxAge)
	}
	if s.HistoryDuplicates > s.HistoryMaxAge {
		return errors.New("config: streams.history_duplicates longer than history_max_age")
	}
	if s.DLQMaxAge <= 0 {
		s.DLQMaxAge = DefaultDLQMaxAge
	}
	if err := c.Cluster.check(s.HistoryDuplicates); err != nil {
		return err
	}
	if len(c.Clients) == 0 {
		return errors.New("config: no clients")
	}
	for _, id := range c.ClientIDs() {
		cl := c.Clients[id]
		where := "clients." + id
		if err := protocol.ValidToken(id); err != nil {
			return fmt.Errorf("config: %s: %w", where, err)
		}
		if cl == nil {
			return fmt.Errorf("config: %s: empty", where)
		}
		if cl.TokenSource == "" {
			return fmt.Errorf("config: %s.token_source missing (file:/path, env:NAME or cred:NAME)", where)
		}
		if len(cl.PublicKeys) == 0 {
			return fmt.Errorf("config: %s.public_keys empty", where)
		}
		for i, k := range cl.PublicKeys {
			if _, err := keyfile.ParsePublicKey(k); err != nil {
				return fmt.Errorf("config: %s.public_keys[%d]: %w", where, i, err)
			}
		}
		if err := cl.NATS.check(where + ".nats"); err != nil {
			return err
		}
		if w := cl.Webhook; w != nil {
			if err := w.check(where + ".webhook"); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *ClusterConfig) check(dedup time.Duration) error {
	if len(c.Peers) == 0 {
		return errors.New("config: cluster.peers missing: the relay verifies every result against the nodes' identity keys (signerctl identity prints each)")
	}
	for _, id := range slices.Sorted(maps.Keys(c.Peers)) {
		if err := protocol.ValidToken(id); err != nil {
			return fmt.Errorf("config: cluster.peers: node id %q: %w", id, err)
		}
		if _, err := keyfile.ParsePublicKey(c.Peers[id]); err != nil {
			return fmt.Errorf("config: cluster.peers.%s: %w", id, err)
		}
	}
	if c.Signers < minSigners || c.Signers > len(c.Peers) {
		return fmt.Errorf("config: cluster.signers (t+1, signerd's threshold) must be between %d and %d (the peers), got %d", minSigners, len(c.Peers), c.Signers)
	}
	if c.Hold <= 0 {
		c.Hold = min(DefaultHold, dedup)
	}
	if c.Hold > dedup {
		return fmt.Errorf("config: cluster.hold (%s) longer than streams.history_duplicates (%s)", c.Hold, dedup)
	}
	return nil
}

// NodeKeys parses the peers' identity keys (node ID -> public key).
func (c *ClusterConfig) NodeKeys() (map[string]crypto.PublicKey, error) {
	keys := make(map[string]crypto.PublicKey, len(c.Peers))
	for id, s := range c.Peers {
		pub, err := keyfile.ParsePublicKey(s)
		if err != nil {
			return nil, fmt.Errorf("config: cluster.peers.%s: %w", id, err)
		}
		keys[id] = pub
	}
	return keys, nil
}

func (n *NATSConfig) check(where string) error {
	if (n.TLS.CertFile == "") != (n.TLS.KeyFile == "") {
		return fmt.Errorf("config: %s.tls.cert_file and key_file go together", where)
	}
	if n.URL == "" && (n.CredsFile != "" || n.TLS.CAFile != "" || n.TLS.CertFile != "") {
		return fmt.Errorf("config: %s: credentials without url", where)
	}
	return nil
}

func (w *WebhookConfig) check(where string) error {
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("config: %s.url must be an http(s) URL", where)
	}
	if u.User != nil {
		return fmt.Errorf("config: %s.url must not carry credentials", where)
	}
	if w.SecretSource == "" && w.SigningKeySource == "" {
		return fmt.Errorf("config: %s: secret_source or signing_key_source missing (file:/path, env:NAME or cred:NAME)", where)
	}
	if (w.PreviousSecretSource == "") != w.PreviousSecretUntil.IsZero() {
		return fmt.Errorf("config: %s.previous_secret_source and previous_secret_until go together", where)
	}
	if w.PreviousSecretSource != "" && w.SecretSource == "" {
		return fmt.Errorf("config: %s.previous_secret_source without secret_source", where)
	}
	if w.Timeout <= 0 {
		w.Timeout = DefaultWebhookTimeout
	}
	if w.MaxAge <= 0 {
		w.MaxAge = DefaultWebhookMaxAge
	}
	if w.InitialBackoff <= 0 {
		w.InitialBackoff = DefaultInitialBackoff
	}
	if w.MaxBackoff <= 0 {
		w.MaxBackoff = DefaultMaxBackoff
	}
	if w.MaxBackoff < w.InitialBackoff {
		return fmt.Errorf("config: %s.max_backoff below initial_backoff", where)
	}
	if w.Concurrency <= 0 {
		w.Concurrency = DefaultConcurrency
	}
	return nil
}

// ClientIDs returns the configured clientIDs, sorted.
func (c *Config) ClientIDs() []string {
	return slices.Sorted(maps.Keys(c.Clients))
}

// redactURL drops user info and query from a URL for logs.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<unparsable url>"
	}
	u.User, u.RawQuery = nil, ""
	return strings.TrimSuffix(u.String(), "?")
}

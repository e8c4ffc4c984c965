package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hwsigner/signer/internal/secret"
)

// webhook posts results to one client's URL, signed per Standard Webhooks
// (https://www.standardwebhooks.com/): headers webhook-id, webhook-timestamp
// (Unix seconds) and webhook-signature, a space-separated list of
// "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>" (the key being the
// base64 part of "whsec_<base64>"; during a rotation's overlap one under
// the previous secret too) and "v1a,<base64 Ed25519 signature of
// id.timestamp.body>" when a signing key is configured.
type webhook struct {
	url       string
	key       []byte // nil: no symmetric signature
	prevKey   []byte
	prevUntil time.Time
	signKey   ed25519.PrivateKey // nil: no asymmetric signature
	http      *http.Client
	gone      atomic.Bool // the endpoint answered 410: deliveries stopped
}

const (
	secretPrefix     = "whsec_"
	signingKeyPrefix = "whsk_"
	publicKeyPrefix  = "whpk_"
)

func newWebhook(c *WebhookConfig) (*webhook, error) {
	w := &webhook{
		url:       c.URL,
		prevUntil: c.PreviousSecretUntil,
		http: &http.Client{
			Timeout:   c.Timeout,
			Transport: webhookTransport(c.Concurrency),
			// A redirect is a failed delivery: never resend a signed
			// result somewhere the configuration does not name.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	var err error
	if c.SecretSource != "" {
		if w.key, err = readSecret(c.SecretSource, "secret_source"); err != nil {
			return nil, err
		}
	}
	if c.PreviousSecretSource != "" {
		if w.prevKey, err = readSecret(c.PreviousSecretSource, "previous_secret_source"); err != nil {
			return nil, err
		}
	}
	if c.SigningKeySource != "" {
		raw, err := secret.Read(c.SigningKeySource)
		if err != nil {
			return nil, fmt.Errorf("webhook signing_key_source: %w", err)
		}
		defer secret.Zero(raw)
		if w.signKey, err = parseSigningKey(string(raw)); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// webhookTransport keeps one idle connection per delivery slot: the
// default of 2 per host would close and re-dial (a TCP and TLS handshake)
// most connections of a burst.
func webhookTransport(concurrency int) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = max(concurrency, 2)
	return t
}

func readSecret(source, what string) ([]byte, error) {
	raw, err := secret.Read(source)
	if err != nil {
		return nil, fmt.Errorf("webhook %s: %w", what, err)
	}
	defer secret.Zero(raw)
	key, err := parseWebhookSecret(string(raw))
	if err != nil {
		return nil, fmt.Errorf("webhook %s: %w", what, err)
	}
	return key, nil
}

// parseSigningKey decodes "whsk_<base64>": an Ed25519 seed (32 bytes) or
// private key (64 bytes, seed then public key, which must match).
func parseSigningKey(s string) (ed25519.PrivateKey, error) {
	b64, ok := strings.CutPrefix(strings.TrimSpace(s), signingKeyPrefix)
	if !ok {
		return nil, errors.New("webhook signing key must be whsk_<base64>")
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, errors.New("webhook signing key must be whsk_ and base64")
	}
	defer secret.Zero(raw)
	switch len(raw) {
	case ed25519.SeedSize:
		return ed25519.NewKeyFromSeed(raw), nil
	case ed25519.PrivateKeySize:
		k := ed25519.NewKeyFromSeed(raw[:ed25519.SeedSize])
		if !bytes.Equal(k[ed25519.SeedSize:], raw[ed25519.SeedSize:]) {
			return nil, errors.New("webhook signing key: the public half does not match the seed")
		}
		return k, nil
	}
	return nil, errors.New("webhook signing key must be an Ed25519 seed (32 bytes) or private key (64 bytes)")
}

// PublicKey returns the receivers' verification key "whpk_<base64>", or ""
// without a signing key.
func (w *webhook) publicKey() string {
	if w.signKey == nil {
		return ""
	}
	return publicKeyPrefix + base64.StdEncoding.EncodeToString(w.signKey.Public().(ed25519.PublicKey))
}

// signatures returns the webhook-signature header value at now.
func (w *webhook) signatures(id string, ts int64, body []byte, now time.Time) string {
	var sigs []string
	if w.key != nil {
		sigs = append(sigs, signWebhook(w.key, id, ts, body))
	}
	if w.prevKey != nil && now.Before(w.prevUntil) {
		sigs = append(sigs, signWebhook(w.prevKey, id, ts, body))
	}
	if w.signKey != nil {
		sigs = append(sigs, "v1a,"+base64.StdEncoding.EncodeToString(ed25519.Sign(w.signKey, signedContent(id, ts, body))))
	}
	return strings.Join(sigs, " ")
}

func signedContent(id string, ts int64, body []byte) []byte {
	b := make([]byte, 0, len(id)+len(body)+24)
	b = append(b, id...)
	b = append(b, '.')
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, '.')
	return append(b, body...)
}

// parseWebhookSecret decodes "whsec_<base64>" into the HMAC key.
func parseWebhookSecret(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	b64, ok := strings.CutPrefix(s, secretPrefix)
	if !ok {
		return nil, errors.New("webhook secret must be whsec_<base64>")
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(key) < 24 || len(key) > 64 {
		return nil, errors.New("webhook secret must be whsec_ and 24 to 64 bytes in base64")
	}
	return key, nil
}

// signWebhook returns the webhook-signature header value.
func signWebhook(key []byte, id string, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(strconv.FormatInt(ts, 10)))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// errStatus is a non-2xx answer; retryAfter is its Retry-After (429 and
// 503 only; 0 when absent or unreadable).
type errStatus struct {
	code       int
	retryAfter time.Duration
}

func (e errStatus) Error() string { return fmt.Sprintf("webhook answered HTTP %d", e.code) }

// maxRetryAfter bounds a Retry-After the relay honours.
const maxRetryAfter = time.Hour

// parseRetryAfter reads a Retry-After header: delay-seconds or an
// HTTP-date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// post sends one delivery attempt; nil means a 2xx answer.
func (w *webhook) post(ctx context.Context, id string, body []byte) error {
	now := time.Now()
	ts := now.Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "signer-relay")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", w.signatures(id, ts, body, now))
	resp, err := w.http.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) { // *url.Error: its text repeats the URL
			return fmt.Errorf("webhook unreachable: %w", ue.Unwrap())
		}
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := errStatus{code: resp.StatusCode}
		if e.code == http.StatusTooManyRequests || e.code == http.StatusServiceUnavailable {
			e.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		}
		return e
	}
	return nil
}

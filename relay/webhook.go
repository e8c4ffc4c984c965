package relay

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hwsigner/signer/internal/secret"
)

// webhook posts results to one client's URL, signed per Standard Webhooks
// (https://www.standardwebhooks.com/): headers webhook-id, webhook-timestamp
// (Unix seconds) and webhook-signature "v1,<base64 HMAC-SHA256(key,
// id.timestamp.body)>", the key being the base64 part of "whsec_<base64>".
type webhook struct {
	url  string
	key  []byte
	http *http.Client
}

const secretPrefix = "whsec_"

func newWebhook(c *WebhookConfig) (*webhook, error) {
	raw, err := secret.Read(c.SecretSource)
	if err != nil {
		return nil, fmt.Errorf("webhook secret_source: %w", err)
	}
	defer secret.Zero(raw)
	key, err := parseWebhookSecret(string(raw))
	if err != nil {
		return nil, err
	}
	return &webhook{
		url: c.URL,
		key: key,
		http: &http.Client{
			Timeout: c.Timeout,
			// A redirect is a failed delivery: never resend a signed
			// result somewhere the configuration does not name.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
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

// errStatus is a non-2xx answer.
type errStatus int

func (e errStatus) Error() string { return fmt.Sprintf("webhook answered HTTP %d", int(e)) }

// post sends one delivery attempt; nil means a 2xx answer.
func (w *webhook) post(ctx context.Context, id string, body []byte) error {
	ts := time.Now().Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "signer-relay")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", signWebhook(w.key, id, ts, body))
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
		return errStatus(resp.StatusCode)
	}
	return nil
}

package relay_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hwsigner/signer/protocol"
	"github.com/hwsigner/signer/relay"
)

// openAPI is docs/relay-openapi.yaml, decoded.
type openAPI struct {
	doc map[string]any
}

func loadOpenAPI(t *testing.T) *openAPI {
	t.Helper()
	raw, err := os.ReadFile("../docs/relay-openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("docs/relay-openapi.yaml: %v", err)
	}
	if doc["openapi"] != "3.1.0" {
		t.Fatalf("openapi: %v, want 3.1.0", doc["openapi"])
	}
	return &openAPI{doc}
}

// deref follows a "$ref": "#/a/b" chain.
func (o *openAPI) deref(t *testing.T, v any) map[string]any {
	t.Helper()
	m, _ := v.(map[string]any)
	for m != nil {
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		var cur any = o.doc
		for _, p := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			cm, _ := cur.(map[string]any)
			cur = cm[p]
		}
		if cur == nil {
			t.Fatalf("dangling $ref %s", ref)
		}
		m, _ = cur.(map[string]any)
	}
	return m
}

func (o *openAPI) operations() map[string]map[string]any { // "METHOD path" -> operation
	ops := map[string]map[string]any{}
	for path, item := range o.doc["paths"].(map[string]any) {
		for method, op := range item.(map[string]any) {
			ops[strings.ToUpper(method)+" "+path] = op.(map[string]any)
		}
	}
	return ops
}

// response returns the documented response of an operation for status.
func (o *openAPI) response(t *testing.T, op map[string]any, status int) map[string]any {
	t.Helper()
	rs, _ := op["responses"].(map[string]any)
	r, ok := rs[strconv.Itoa(status)]
	if !ok {
		return nil
	}
	return o.deref(t, r)
}

// validate checks v (decoded JSON) against a JSON Schema subset: $ref,
// allOf, type, required, properties, additionalProperties, items, enum,
// pattern, minimum.
func (o *openAPI) validate(t *testing.T, schema any, v any, at string) error {
	t.Helper()
	s := o.deref(t, schema)
	if s == nil {
		return nil
	}
	for _, sub := range asList(s["allOf"]) {
		if err := o.validate(t, sub, v, at); err != nil {
			return err
		}
	}
	if enum, ok := s["enum"].([]any); ok {
		if !slices.ContainsFunc(enum, func(e any) bool { return fmt.Sprint(e) == fmt.Sprint(v) }) {
			return fmt.Errorf("%s: %v not in %v", at, v, enum)
		}
	}
	switch s["type"] {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: %T, want an object", at, v)
		}
		for _, r := range asList(s["required"]) {
			if _, ok := m[r.(string)]; !ok {
				return fmt.Errorf("%s: %q missing", at, r)
			}
		}
		props, _ := s["properties"].(map[string]any)
		for k, fv := range m {
			if ps, ok := props[k]; ok {
				if err := o.validate(t, ps, fv, at+"."+k); err != nil {
					return err
				}
			} else if ap, ok := s["additionalProperties"]; ok {
				if err := o.validate(t, ap, fv, at+"."+k); err != nil {
					return err
				}
			} else if props != nil {
				return fmt.Errorf("%s: property %q not documented", at, k)
			}
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%s: %T, want an array", at, v)
		}
		for i, e := range a {
			if err := o.validate(t, s["items"], e, fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s: %T, want a string", at, v)
		}
		if p, ok := s["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(str) {
			return fmt.Errorf("%s: %q does not match %s", at, str, p)
		}
	case "integer":
		n, ok := v.(float64)
		if !ok || n != float64(int64(n)) {
			return fmt.Errorf("%s: %v, want an integer", at, v)
		}
		if m, ok := s["minimum"].(int); ok && n < float64(m) {
			return fmt.Errorf("%s: %v below %d", at, n, m)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%s: %T, want a boolean", at, v)
		}
	}
	return nil
}

func asList(v any) []any { l, _ := v.([]any); return l }

// apiCase is one request to the real handler and the status it must get.
type apiCase struct {
	name   string
	method string
	path   string // the documented path
	status int
	do     func(t *testing.T) *http.Response // nil: a plain request
	query  string
	token  string
	body   []byte
}

// TestOpenAPIMatchesHandlers: docs/relay-openapi.yaml documents exactly the
// routes Handler serves; every status code it documents for a route is
// answered by the real handler in some case below, every answer of the
// cases is documented, and each answer's body (JSON) or content type
// matches the documented schema. The 503s come last, with NATS shut down.
func TestOpenAPIMatchesHandlers(t *testing.T) {
	o := loadOpenAPI(t)
	ops := o.operations()
	var served, documented []string
	for _, r := range relay.Routes() {
		served = append(served, r.Method+" "+r.Path)
	}
	for k := range ops {
		documented = append(documented, k)
	}
	sort.Strings(served)
	sort.Strings(documented)
	if !slices.Equal(served, documented) {
		t.Fatalf("routes served %v, documented %v", served, documented)
	}

	seed := make([]byte, ed25519.SeedSize)
	_, _ = rand.Read(seed)
	e := startSimEnv(t, relay.WebSocketConfig{}, func(dir string, cfg *relay.Config) {
		w := hookConfig(t, dir, "svcA", "http://127.0.0.1:1/hook") // never answers: not under test here
		w.SigningKeySource = "file:" + writeFile(t, dir, "whsk", "whsk_"+base64.StdEncoding.EncodeToString(seed))
		cfg.Clients["svcA"].Webhook = w
	})
	base := e.run.srv.URL
	tokA, tokB := e.tokens["svcA"], e.tokens["svcB"]
	e.decide(t, "svcA", "r-openapi") // something for the streams to carry

	submitOK := map[string]func() []byte{
		"/v1/wallets": func() []byte {
			return e.signedRequest(t, "svcA", protocol.OpKeygen, &protocol.KeygenRequest{WalletID: "w-oa", KeyTypes: []string{protocol.KeyTypeEd25519}})
		},
		"/v1/sign": func() []byte {
			return e.signedRequest(t, "svcA", protocol.OpSign, &protocol.SigningRequest{WalletID: "w-oa", KeyType: protocol.KeyTypeEd25519, TxID: "tx-oa", Tx: []byte("pay")})
		},
		"/v1/reshare": func() []byte {
			return e.signedRequest(t, "svcA", protocol.OpReshare, &protocol.ReshareRequest{WalletID: "w-oa", KeyType: protocol.KeyTypeEd25519,
				SessionID: "s-" + randHex(8), NodeIDs: []string{"node0", "node1", "node2"}, NewThreshold: 1})
		},
	}
	var live, down []apiCase
	for _, p := range []string{"/v1/wallets", "/v1/sign", "/v1/reshare"} {
		live = append(live,
			apiCase{name: "accepted", method: "POST", path: p, status: 202, token: tokA, body: submitOK[p]()},
			apiCase{name: "malformed", method: "POST", path: p, status: 400, token: tokA, body: []byte("{")},
			apiCase{name: "no token", method: "POST", path: p, status: 401, body: submitOK[p]()},
			apiCase{name: "another client's request", method: "POST", path: p, status: 403, token: tokB, body: submitOK[p]()},
			apiCase{name: "GET", method: "GET", path: p, status: 405, token: tokA},
			apiCase{name: "too large", method: "POST", path: p, status: 413, token: tokA, body: bytes.Repeat([]byte("a"), 70<<10)},
		)
		down = append(down, apiCase{name: "NATS down", method: "POST", path: p, status: 503, token: tokA, body: submitOK[p]()})
	}
	for _, p := range []string{"/v1/events", "/v1/results", "/v1/ws"} {
		live = append(live,
			apiCase{name: "bad cursor", method: "GET", path: p, status: 400, token: tokA, query: "?after=x"},
			apiCase{name: "no token", method: "GET", path: p, status: 401},
			apiCase{name: "POST", method: "POST", path: p, status: 405, token: tokA},
		)
		down = append(down, apiCase{name: "NATS down", method: "GET", path: p, status: 503, token: tokA, query: "?wait=0s"})
	}
	stream := func(t *testing.T) *http.Response { // the first bytes of an SSE stream
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/events", nil)
		req.Header.Set("Authorization", "Bearer "+tokA)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	ws := func(t *testing.T) *http.Response {
		c, resp, err := e.dial(t, tokA, "0", nil)
		if err != nil {
			t.Fatalf("ws: %v", err)
		}
		it, err := e.next(t, c, 20*time.Second)
		if err != nil || it.Res.RequestID != "r-openapi" {
			t.Fatalf("ws message: %+v %v", it, err)
		}
		// The message body for the schema check: read it again from the start.
		c2, _, err := e.dial(t, tokA, "0", nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, b, err := c2.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		resp.Header.Set("Content-Type", "application/json")
		resp.Body = io.NopCloser(bytes.NewReader(b))
		return resp
	}
	live = append(live,
		apiCase{name: "stream", method: "GET", path: "/v1/events", status: 200, do: stream},
		apiCase{name: "poll", method: "GET", path: "/v1/results", status: 200, token: tokA, query: "?wait=0s"},
		apiCase{name: "upgrade", method: "GET", path: "/v1/ws", status: 101, do: ws},
		apiCase{name: "not a handshake", method: "GET", path: "/v1/ws", status: 426, token: tokA},
		apiCase{name: "key", method: "GET", path: "/v1/webhook-key", status: 200, token: tokA},
		apiCase{name: "no token", method: "GET", path: "/v1/webhook-key", status: 401},
		apiCase{name: "no signing key", method: "GET", path: "/v1/webhook-key", status: 404, token: tokB},
		apiCase{name: "POST", method: "POST", path: "/v1/webhook-key", status: 405, token: tokA},
		apiCase{name: "up", method: "GET", path: "/healthz", status: 200},
		apiCase{name: "ready", method: "GET", path: "/readyz", status: 200},
		apiCase{name: "metrics", method: "GET", path: "/metrics", status: 200},
	)
	down = append(down, apiCase{name: "NATS down", method: "GET", path: "/readyz", status: 503})

	seen := map[string]bool{}
	run := func(c apiCase) {
		t.Helper()
		var resp *http.Response
		if c.do != nil {
			resp = c.do(t)
		} else {
			req, _ := http.NewRequest(c.method, base+c.path+c.query, bytes.NewReader(c.body))
			if c.token != "" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			var err error
			if resp, err = http.DefaultClient.Do(req); err != nil {
				t.Fatalf("%s %s (%s): %v", c.method, c.path, c.name, err)
			}
		}
		defer resp.Body.Close()
		if resp.StatusCode != c.status {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("%s %s (%s): %d %s, want %d", c.method, c.path, c.name, resp.StatusCode, b, c.status)
		}
		// A 405 is documented on the route's own method.
		key := c.method + " " + c.path
		if c.status == http.StatusMethodNotAllowed {
			key = relayMethod(c.path) + " " + c.path
		}
		op := ops[key]
		doc := o.response(t, op, c.status)
		if doc == nil {
			t.Fatalf("%s %s (%s): status %d is not documented", c.method, c.path, c.name, c.status)
		}
		seen[fmt.Sprintf("%s %d", key, c.status)] = true
		content, _ := doc["content"].(map[string]any)
		ct := resp.Header.Get("Content-Type")
		mt := strings.TrimSpace(strings.Split(ct, ";")[0])
		media, ok := content[mt].(map[string]any)
		if !ok {
			t.Fatalf("%s %s (%s): content type %q not documented for %d (%v)", c.method, c.path, c.name, ct, c.status, content)
		}
		if mt != "application/json" {
			return
		}
		var v any
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&v); err != nil {
			t.Fatalf("%s %s (%s): %v", c.method, c.path, c.name, err)
		}
		if err := o.validate(t, media["schema"], v, "body"); err != nil {
			t.Fatalf("%s %s (%s) %d: %v", c.method, c.path, c.name, c.status, err)
		}
	}
	for _, c := range live {
		run(c)
	}
	e.srv.Shutdown()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz still ready with NATS down")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range down {
		run(c)
	}
	var missing []string
	for key, op := range ops {
		for st := range op["responses"].(map[string]any) {
			if !seen[key+" "+st] {
				missing = append(missing, key+" "+st)
			}
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		t.Fatalf("documented but never answered by the handlers: %v", missing)
	}
}

func relayMethod(path string) string {
	for _, r := range relay.Routes() {
		if r.Path == path {
			return r.Method
		}
	}
	return ""
}

// signedRequest signs a request of op for clientID as the Go client does.
func (e *wsEnv) signedRequest(t *testing.T, clientID, op string, req protocol.Request) []byte {
	t.Helper()
	env := req.Env()
	env.ClientID, env.RequestID = clientID, randHex(16)
	env.SetTimes(time.Now(), 5*time.Minute)
	raw, err := protocol.SignRequest(context.Background(), e.ckeys[clientID], op, req)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

package protocol

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// PolicyConfig is the node-side client policy file (YAML or JSON):
//
//	clients:
//	  - name: wallet-backend
//	    public_key: |
//	      -----BEGIN PUBLIC KEY-----
//	      MCowBQYDK2VwAyEA...
//	      -----END PUBLIC KEY-----
//	    client_ids: [svcA, ""]     # "" = the legacy subjects
//	    ops: [keygen, sign, reshare]
type PolicyConfig struct {
	Clients []ClientConfig `yaml:"clients" json:"clients"`
}

// ClientConfig is one client key and what it may do.
type ClientConfig struct {
	Name string `yaml:"name" json:"name"`
	// PublicKey: PEM "PUBLIC KEY" block, or base64 of the PKIX DER.
	// Ed25519 or ECDSA P-256.
	PublicKey string `yaml:"public_key" json:"public_key"`
	// ClientIDs the key may claim; the first is its primary ID, where
	// errors about spoofed IDs go. "" stands for the legacy subjects.
	ClientIDs []string `yaml:"client_ids" json:"client_ids"`
	// Ops the key may request: keygen, sign, reshare.
	Ops []string `yaml:"ops" json:"ops"`
}

// Policy binds client keys (by key ID) to client IDs and operations. It is
// immutable once built and safe for concurrent use.
type Policy struct {
	byKeyID map[string]*policyEntry
}

type policyEntry struct {
	name      string
	pub       crypto.PublicKey
	clientIDs []string
	ops       []string
}

// ParsePolicy parses a policy in JSON (input starting with '{') or YAML.
// Unknown fields are rejected.
func ParsePolicy(data []byte) (*Policy, error) {
	var cfg PolicyConfig
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidPolicy, err)
		}
	} else {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidPolicy, err)
		}
	}
	return NewPolicy(cfg)
}

// LoadPolicyFile reads and parses a policy file.
func LoadPolicyFile(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidPolicy, err)
	}
	p, err := ParsePolicy(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// NewPolicy checks cfg and builds a Policy: every client has a name, a
// supported public key listed once, at least one valid client ID (or "") and
// at least one known op.
func NewPolicy(cfg PolicyConfig) (*Policy, error) {
	p := &Policy{byKeyID: map[string]*policyEntry{}}
	for i, c := range cfg.Clients {
		where := fmt.Sprintf("clients[%d] (%s)", i, c.Name)
		if strings.TrimSpace(c.Name) == "" {
			return nil, fmt.Errorf("%w: %s: name missing", ErrInvalidPolicy, where)
		}
		pub, err := ParsePublicKey(c.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: public_key: %v", ErrInvalidPolicy, where, err)
		}
		keyID, err := KeyID(pub)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: public_key: %v", ErrInvalidPolicy, where, err)
		}
		if prev, dup := p.byKeyID[keyID]; dup {
			return nil, fmt.Errorf("%w: %s: key %s already belongs to %s", ErrInvalidPolicy, where, keyID, prev.name)
		}
		if len(c.ClientIDs) == 0 {
			return nil, fmt.Errorf("%w: %s: client_ids empty (use \"\" for the legacy subjects)", ErrInvalidPolicy, where)
		}
		for _, id := range c.ClientIDs {
			if err := validClientID(id); err != nil {
				return nil, fmt.Errorf("%w: %s: client_ids: %v", ErrInvalidPolicy, where, err)
			}
		}
		if len(c.Ops) == 0 {
			return nil, fmt.Errorf("%w: %s: ops empty", ErrInvalidPolicy, where)
		}
		for _, op := range c.Ops {
			if !ValidOp(op) {
				return nil, fmt.Errorf("%w: %s: unknown op %q", ErrInvalidPolicy, where, op)
			}
		}
		p.byKeyID[keyID] = &policyEntry{
			name:      c.Name,
			pub:       pub,
			clientIDs: slices.Clone(c.ClientIDs),
			ops:       slices.Clone(c.Ops),
		}
	}
	return p, nil
}

// Authorize looks up the client key keyID and checks that it may claim
// clientID and request op. Errors: ErrUnknownKey (pub is nil), ErrUnknownOp,
// ErrClientIDNotAllowed and ErrOpNotAllowed. For the last two pub is still
// returned, so the caller verifies the request's signature before it answers
// UNAUTHORIZED_CLIENT (to PrimaryClientID, never to the claimed clientID).
func (p *Policy) Authorize(keyID, clientID, op string) (crypto.PublicKey, error) {
	e, ok := p.byKeyID[keyID]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKey, keyID)
	}
	if !ValidOp(op) {
		return e.pub, fmt.Errorf("%w: %q", ErrUnknownOp, op)
	}
	if !slices.Contains(e.clientIDs, clientID) {
		return e.pub, fmt.Errorf("%w: key %s (%s) claimed %q", ErrClientIDNotAllowed, keyID, e.name, clientID)
	}
	if !slices.Contains(e.ops, op) {
		return e.pub, fmt.Errorf("%w: key %s (%s) may not %s", ErrOpNotAllowed, keyID, e.name, op)
	}
	return e.pub, nil
}

// PrimaryClientID returns the first client ID bound to keyID: the requester's
// own subject, where errors about a spoofed client_id are sent.
func (p *Policy) PrimaryClientID(keyID string) (string, bool) {
	e, ok := p.byKeyID[keyID]
	if !ok {
		return "", false
	}
	return e.clientIDs[0], true
}

// ClientName returns the configured name of the client with key keyID.
func (p *Policy) ClientName(keyID string) (string, bool) {
	e, ok := p.byKeyID[keyID]
	if !ok {
		return "", false
	}
	return e.name, true
}

// Len returns the number of client keys.
func (p *Policy) Len() int { return len(p.byKeyID) }

// ParsePublicKey parses a PEM "PUBLIC KEY" block or base64 (standard) PKIX
// DER into an Ed25519 or ECDSA P-256 public key.
func ParsePublicKey(s string) (crypto.PublicKey, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("%w: empty public key", ErrUnsupportedKey)
	}
	var der []byte
	if strings.HasPrefix(s, "-----BEGIN") {
		block, rest := pem.Decode([]byte(s))
		if block == nil || block.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
			return nil, fmt.Errorf("%w: want exactly one PEM PUBLIC KEY block", ErrUnsupportedKey)
		}
		der = block.Bytes
	} else {
		var err error
		if der, err = base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), "")); err != nil {
			return nil, fmt.Errorf("%w: not PEM nor base64: %v", ErrUnsupportedKey, err)
		}
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	return normalizePublicKey(pub)
}

// ParsePrivateKeyPEM parses a PEM PKCS#8 "PRIVATE KEY" block (a client key
// file) into a signer. Errors never include key material.
func ParsePrivateKeyPEM(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not a PKCS#8 private key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("not a signing key")
	}
	return s, nil
}

// MarshalPublicKeyPEM encodes an Ed25519 or ECDSA P-256 public key as a PEM
// "PUBLIC KEY" block, the form policy files and peer lists use.
func MarshalPublicKeyPEM(pub crypto.PublicKey) (string, error) {
	pub, err := normalizePublicKey(pub)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

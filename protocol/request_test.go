package protocol

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		req   Request
		field string // "" = valid
	}{
		{"sign ok", testSigning(), ""},
		{"keygen ok", testKeygen(), ""},
		{"reshare ok", testReshare(), ""},
		{"keygen one type", func() Request { r := testKeygen(); r.KeyTypes = []string{KeyTypeEd25519}; return r }(), ""},
		{"keygen bad type", func() Request { r := testKeygen(); r.KeyTypes = []string{"rsa"}; return r }(), "key_types[0]"},
		{"keygen dup type", func() Request {
			r := testKeygen()
			r.KeyTypes = []string{KeyTypeEd25519, KeyTypeEd25519}
			return r
		}(), "key_types[1]"},
		{"keygen bad wallet", func() Request { r := testKeygen(); r.WalletID = "w.1"; return r }(), "wallet_id"},
		{"bad client id", func() Request { r := testKeygen(); r.ClientID = "svc*"; return r }(), "client_id"},
		{"legacy client id", func() Request { r := testKeygen(); r.ClientID = ""; return r }(), ""},
		{"missing request id", func() Request { r := testKeygen(); r.RequestID = ""; return r }(), "request_id"},
		{"bad key id", func() Request { r := testKeygen(); r.KeyID = "ABCDEF"; return r }(), "key_id"},
		{"wrong op", func() Request { r := testKeygen(); r.Op = OpSign; return r }(), "op"},
		{"no created_at", func() Request { r := testKeygen(); r.CreatedAt = 0; return r }(), "created_at"},
		{"expires before created", func() Request { r := testKeygen(); r.ExpiresAt = r.CreatedAt; return r }(), "expires_at"},
		{"ttl too long", func() Request {
			r := testKeygen()
			r.SetTimes(testNow, MaxRequestTTL+time.Millisecond)
			return r
		}(), "expires_at"},
		{"ttl max", func() Request { r := testKeygen(); r.SetTimes(testNow, MaxRequestTTL); return r }(), ""},
		{"digest short", func() Request { r := testSigning(); r.Tx = r.Tx[:31]; return r }(), "tx"},
		{"digest long", func() Request { r := testSigning(); r.Tx = make([]byte, 33); return r }(), "tx"},
		{"ed25519 long message", func() Request {
			r := testSigning()
			r.KeyType, r.Tx = KeyTypeEd25519, make([]byte, 1000)
			return r
		}(), ""},
		{"ed25519 too long", func() Request {
			r := testSigning()
			r.KeyType, r.Tx = KeyTypeEd25519, make([]byte, MaxTxSize+1)
			return r
		}(), "tx"},
		{"ed25519 empty", func() Request { r := testSigning(); r.KeyType, r.Tx = KeyTypeEd25519, nil; return r }(), "tx"},
		{"bad key type", func() Request { r := testSigning(); r.KeyType = "p256"; return r }(), "key_type"},
		{"bad tx id", func() Request { r := testSigning(); r.TxID = ""; return r }(), "tx_id"},
		{"hardened index", func() Request { r := testSigning(); r.DerivationPath[2] = HardenedOffset; return r }(), "derivation_path[2]"},
		{"max index", func() Request { r := testSigning(); r.DerivationPath[2] = HardenedOffset - 1; return r }(), ""},
		{"path too deep", func() Request {
			r := testSigning()
			r.DerivationPath = make([]uint32, MaxDerivationDepth+1)
			return r
		}(), "derivation_path"},
		{"network code too long", func() Request {
			r := testSigning()
			r.NetworkInternalCode = strings.Repeat("x", MaxNetworkCodeLen+1)
			return r
		}(), "network_internal_code"},
		{"reshare no nodes", func() Request { r := testReshare(); r.NodeIDs = nil; return r }(), "node_ids"},
		{"reshare dup node", func() Request { r := testReshare(); r.NodeIDs[2] = "node0"; return r }(), "node_ids[2]"},
		{"reshare bad node", func() Request { r := testReshare(); r.NodeIDs[1] = "n.1"; return r }(), "node_ids[1]"},
		{"reshare threshold 0", func() Request { r := testReshare(); r.NewThreshold = 0; return r }(), "new_threshold"},
		{"reshare threshold n", func() Request { r := testReshare(); r.NewThreshold = 3; return r }(), "new_threshold"},
		{"reshare threshold n-1", func() Request { r := testReshare(); r.NewThreshold = 2; return r }(), ""},
		{"reshare bad session", func() Request { r := testReshare(); r.SessionID = "a b"; return r }(), "session_id"},
		{"reshare bad key type", func() Request { r := testReshare(); r.KeyType = ""; return r }(), "key_type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := tt.req.Env()
			if env.Op == "" {
				env.Op = tt.req.Operation()
			}
			if env.KeyID == "" {
				env.KeyID = "00112233445566778899aabbccddeeff"
			}
			err := tt.req.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("got %v, want a FieldError", err)
			}
			if fe.Field != tt.field {
				t.Fatalf("field %q, want %q (%v)", fe.Field, tt.field, err)
			}
		})
	}
}

func TestDecodeRequest(t *testing.T) {
	ctx := context.Background()
	signer := newEd25519(t)
	good, err := SignRequest(ctx, signer, OpSign, testSigning())
	if err != nil {
		t.Fatal(err)
	}
	// A signed but invalid request (tx of 31 bytes), built as a map.
	badMap := map[string]any{
		"client_id": "svcA", "request_id": "r9", "created_at": testNow.UnixMilli(),
		"expires_at": testNow.UnixMilli() + 1000, "wallet_id": "w", "key_type": KeyTypeSecp256k1,
		"tx_id": "t", "tx": make([]byte, 31),
	}
	bad, err := SignRequest(ctx, signer, OpSign, badMap)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		op      string
		raw     []byte
		want    error
		wantReq bool
	}{
		{"ok", OpSign, good, nil, true},
		{"invalid but signed", OpSign, bad, ErrInvalidRequest, true},
		{"op of another subject", OpKeygen, good, ErrInvalidRequest, true},
		{"unknown op", "burn", good, ErrUnknownOp, false},
		{"case-folded member", OpSign, []byte(strings.Replace(string(good), `"wallet_id"`, `"Wallet_ID"`, 1)), ErrMalformed, false},
		{"wrong member type", OpSign, []byte(strings.Replace(string(good), `"tx_id":"tx-1"`, `"tx_id":1`, 1)), ErrMalformed, false},
		{"negative path index", OpSign, []byte(strings.Replace(string(good), `[44,`, `[-44,`, 1)), ErrMalformed, false},
		{"no signature", OpSign, mutate(t, good, func(m map[string]any) { delete(m, "signature") }), ErrInvalidRequest, true},
		{"too large", OpSign, make([]byte, MaxMessageSize+1), ErrTooLarge, false},
		{"garbage", OpSign, []byte("nats"), ErrMalformed, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := DecodeRequest(tt.op, tt.raw)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if (req != nil) != tt.wantReq {
				t.Fatalf("request returned: %v, want %v", req != nil, tt.wantReq)
			}
		})
	}
	req, _ := DecodeRequest(OpSign, good)
	sr := req.(*SigningRequest)
	if sr.Tx[0] != 0 || sr.Tx[1] != 0 || len(sr.Tx) != 32 {
		t.Fatalf("leading zero bytes lost: %x", sr.Tx)
	}
	if len(sr.DerivationPath) != 5 || sr.DerivationPath[4] != 7 {
		t.Fatalf("path %v", sr.DerivationPath)
	}
}

func TestCheckTime(t *testing.T) {
	e := testEnvelope("svcA", "r")
	tests := []struct {
		name string
		now  time.Time
		want error
	}{
		{"fresh", testNow.Add(time.Minute), nil},
		{"at creation", testNow, nil},
		{"expired", testNow.Add(5 * time.Minute), ErrExpired},
		{"future within skew", testNow.Add(-20 * time.Second), nil},
		{"future beyond skew", testNow.Add(-time.Minute), ErrNotYetValid},
	}
	for _, tt := range tests {
		err := e.CheckTime(tt.now, 30*time.Second)
		if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v want %v", tt.name, err, tt.want)
		}
	}
}

func TestKeygenDefaults(t *testing.T) {
	r := testKeygen()
	if got := r.EffectiveKeyTypes(); len(got) != 2 || got[0] != KeyTypeSecp256k1 || got[1] != KeyTypeEd25519 {
		t.Fatalf("default key types %v", got)
	}
}

package relay

import (
	"bytes"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hwsigner/signer/attest"
	"github.com/hwsigner/signer/protocol"
)

// PayloadFormat is the value of the Relay-Payload header of every history
// entry the relay writes: the entry's data is a Delivery. Entries without it
// were stored by a relay before attestation and are delivered nowhere.
const PayloadFormat = "attested/v1"

// Delivery is the webhook body, the data of an SSE event and (with its
// cursor) an item of a long poll: the relay's decision for one request (one
// client, op, request_id and key_id), with the node results that attest it.
//
//	{"result": {...}, "attestations": ["<base64 signed node result>", ...], "nodes": {...}}
//
// Result is the attested result: the members every attesting node signed,
// without node_id and node_signature, in the canonical encoding of
// docs/canonical-encoding.md. Attestations are the raw signed node results
// (bytes as each node published them, base64), sorted by node id: a
// backend re-verifies each against the node's identity key and applies the
// rules itself (docs/canonical-encoding.md §7). Nodes, on an error
// decision only, says what each node reported (node -> "success" or its
// error code).
//
// Two error decisions are made by the rules, not reported by a node: a
// RESULT_MISMATCH (keygen members report different successes; the
// attestations are the conflicting results) and a TIMEOUT (no outcome
// attested within cluster.hold; the attestations are the results seen, as
// evidence). Neither result carries a node signature of its own.
type Delivery struct {
	Result       json.RawMessage   `json:"result"`
	Attestations [][]byte          `json:"attestations"`
	Nodes        map[string]string `json:"nodes,omitempty"`
}

// errNoResult: a Delivery without a result (not this format).
var errNoResult = errors.New("relay: payload without a result")

// ParseDelivery decodes a Delivery (a webhook body, an SSE event's data)
// and its result, WITHOUT verifying anything: a backend that does not trust
// the relay verifies the attestations (VerifyDelivery, or the steps of
// docs/canonical-encoding.md §7).
func ParseDelivery(data []byte) (*Delivery, *protocol.Result, error) {
	var d Delivery
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, nil, fmt.Errorf("relay: payload: %w", err)
	}
	if len(d.Result) == 0 || bytes.Equal(d.Result, []byte("null")) {
		return nil, nil, errNoResult
	}
	res, err := protocol.DecodeResult(d.Result)
	if err != nil {
		return nil, nil, fmt.Errorf("relay: payload result: %w", err)
	}
	return &d, res, nil
}

// encodeDelivery builds the payload of a decision. ids fills the members a
// TIMEOUT result made by the relay must carry (op, request_id, client_id,
// key_id) when the decision's result lacks them.
func encodeDelivery(d attest.Decision, ids protocol.Result) ([]byte, error) {
	var res protocol.Result
	if d.Result != nil {
		res = *d.Result
	}
	if res.Op == "" {
		res.Op = ids.Op
	}
	if res.RequestID == "" {
		res.RequestID = ids.RequestID
	}
	if res.ClientID == "" {
		res.ClientID = ids.ClientID
	}
	if res.KeyID == "" {
		res.KeyID = ids.KeyID
	}
	if res.ResultType == "" {
		res.SetError(protocol.CodeTimeout, "no outcome attested")
	}
	body, err := attestedResult(&res)
	if err != nil {
		return nil, err
	}
	out := Delivery{Result: body, Attestations: d.Attestations}
	if out.Attestations == nil {
		out.Attestations = [][]byte{}
	}
	var ae *attest.Error
	if errors.As(d.Err, &ae) && len(ae.Nodes) > 0 {
		out.Nodes = ae.Nodes
	}
	return json.Marshal(out)
}

// attestedResult returns res without node_id and node_signature, canonical.
func attestedResult(res *protocol.Result) (json.RawMessage, error) {
	raw, err := json.Marshal(res)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, err
	}
	delete(obj, "node_id")
	delete(obj, "node_signature")
	if raw, err = json.Marshal(obj); err != nil {
		return nil, err
	}
	return protocol.Canonicalize(raw)
}

// ErrNotAttested: a delivery whose result is not attested by the rules.
var ErrNotAttested = errors.New("relay: result not attested")

// VerifyDelivery is what a Go backend that does not trust the relay runs on
// a delivery (the steps of docs/canonical-encoding.md §7): every attestation
// verifies against nodeKeys (protocol.VerifyResult) and names the same op,
// request_id, client_id and key_id as the result; fed to an
// attest.Collector with rules, in their order, they decide the delivered
// result (a success member for member, an error by its code). A TIMEOUT
// (the relay stopped waiting after cluster.hold) is the one result they
// must NOT decide: its attestations are the evidence seen, no outcome.
// Anything else fails with ErrNotAttested.
func VerifyDelivery(data []byte, nodeKeys map[string]crypto.PublicKey, rules attest.Rules) (*protocol.Result, error) {
	d, res, err := ParseDelivery(data)
	if err != nil {
		return nil, err
	}
	if res.NodeID != "" || res.NodeSignature != "" {
		return nil, fmt.Errorf("%w: the result carries one node's signature", ErrNotAttested)
	}
	col := attest.NewCollector(res.Op, rules)
	var dec attest.Decision
	done := false
	for i, raw := range d.Attestations {
		a, err := protocol.VerifyResult(raw, nodeKeys)
		if err != nil {
			return nil, fmt.Errorf("%w: attestation %d: %w", ErrNotAttested, i, err)
		}
		if a.Op != res.Op || a.RequestID != res.RequestID || a.ClientID != res.ClientID || a.KeyID != res.KeyID {
			return nil, fmt.Errorf("%w: attestation %d (node %s) is for another request", ErrNotAttested, i, a.NodeID)
		}
		if !done {
			dec, done = col.Add(a, raw)
		}
	}
	timeout := !res.Succeeded() && res.ErrorCode == protocol.CodeTimeout
	switch {
	case timeout && !done:
		return res, nil
	case !done:
		return nil, fmt.Errorf("%w: %d attestations do not meet the rules", ErrNotAttested, len(d.Attestations))
	}
	got, err := attestedResult(dec.Result)
	if err != nil {
		return nil, err
	}
	want, err := protocol.Canonicalize(d.Result) // whitespace and member order are free
	if err != nil {
		return nil, err
	}
	switch {
	case res.Succeeded() && dec.Err == nil && bytes.Equal(got, want):
	case !res.Succeeded() && !timeout && dec.Err != nil && dec.Result.ErrorCode == res.ErrorCode:
	default:
		return nil, fmt.Errorf("%w: the attestations decide another result", ErrNotAttested)
	}
	return res, nil
}

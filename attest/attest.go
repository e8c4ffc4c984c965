// Package attest decides what a committee of signer nodes attested for one
// request, from the nodes' individually signed results. It is pure: no NATS,
// no clock; callers verify each result's node signature
// (protocol.VerifyResult) and feed it to a Collector, which says when the
// rules are met:
//
//   - keygen succeeds when every node of Rules.Nodes reports success with an
//     identical result (every member but node_id and node_signature equal);
//     an error from any member, or two members reporting different
//     successes (RESULT_MISMATCH), decides at once;
//   - sign and reshare succeed when Rules.Signers (t+1) distinct nodes report
//     identical successes; an error is final when Rules.Signers distinct
//     nodes report errors (the code: the most frequent, ties to the lowest
//     node id);
//   - results from nodes outside Rules.Nodes, a node's second and later
//     results, and results for another op, request_id, client_id or key_id
//     than the first one taken are ignored.
//
// So no set of t nodes can make a caller accept a forged key, signature,
// reshare or error, and a node that publishes first decides nothing alone.
// The Go client, signerctl and signer-relay decide with this package only;
// the rules and message ids are in docs/canonical-encoding.md ("Verifying a
// committee's attestation").
package attest

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hwsigner/signer/protocol"
)

// Rules are what a committee must attest. Nodes: the cluster's node IDs
// (their keys verify the results); Signers: t+1, how many distinct nodes
// must report the same sign or reshare outcome, or an error. Signers below 1
// means a majority of Nodes.
type Rules struct {
	Nodes   []string
	Signers int
}

// signers is Signers, or a majority of Nodes when Signers < 1.
func (r Rules) signers() int {
	if r.Signers >= 1 {
		return r.Signers
	}
	return len(r.Nodes)/2 + 1
}

// Decision is a Collector's verdict on one request.
type Decision struct {
	// Result is the attested result (success or error) as reported by the
	// attesters: a copy of the one from the lowest node id among them. For
	// RESULT_MISMATCH and TIMEOUT it is an error result made here (no
	// node_id, no node_signature) carrying the request's ids.
	Result *protocol.Result
	// Attestations are the raw signed node results that attest it, sorted
	// by node id. For RESULT_MISMATCH they are the conflicting results, for
	// TIMEOUT the results seen: evidence, not an attestation of success.
	Attestations [][]byte
	// Err is nil on an attested success and an *Error otherwise.
	Err error
}

// Error is a decision that is not a success: an attested error result
// (its code), RESULT_MISMATCH, or TIMEOUT (Expire). Nodes maps each node
// whose result was taken to what it reported.
type Error struct {
	Code   string
	Reason string
	Nodes  map[string]string
}

func (e *Error) Error() string { return "attest: " + e.Code + ": " + e.Reason }

// Retryable reports whether sending the request again (with a new
// request_id) may succeed.
func (e *Error) Retryable() bool { return protocol.Retryable(e.Code) }

// Collector gathers the verified per-node results of ONE request (same op,
// request_id, client_id, key_id). It is not safe for concurrent use.
type Collector struct {
	op      string
	rules   Rules
	members map[string]bool

	bound                      bool // requestID, clientID, keyID set by the first result taken
	requestID, clientID, keyID string

	seen     map[string]*entry // node -> its first result
	decision *Decision
}

type entry struct {
	res *protocol.Result
	raw []byte
	key string // what must be equal for two successes to agree
}

// NewCollector returns a Collector for one request of op under r.
func NewCollector(op string, r Rules) *Collector {
	members := make(map[string]bool, len(r.Nodes))
	for _, n := range r.Nodes {
		members[n] = true
	}
	return &Collector{op: op, rules: r, members: members, seen: map[string]*entry{}}
}

// Add takes one node's result, already verified with protocol.VerifyResult,
// and its raw bytes. It returns the decision once the rules are met
// (done=true); later Adds after a decision return done=false. The first
// result taken fixes the request (request_id, client_id, key_id); callers
// group results by those before Add.
func (c *Collector) Add(res *protocol.Result, raw []byte) (d Decision, done bool) {
	if c.decision != nil || res == nil || res.Op != c.op || !c.members[res.NodeID] {
		return Decision{}, false
	}
	if c.bound && (res.RequestID != c.requestID || res.ClientID != c.clientID || res.KeyID != c.keyID) {
		return Decision{}, false
	}
	if _, dup := c.seen[res.NodeID]; dup {
		return Decision{}, false // keep a node's first result
	}
	if !c.bound {
		c.bound, c.requestID, c.clientID, c.keyID = true, res.RequestID, res.ClientID, res.KeyID
	}
	cp := *res
	c.seen[res.NodeID] = &entry{res: &cp, raw: bytes.Clone(raw), key: equalityKey(&cp, raw)}
	if d, ok := c.decide(); ok {
		c.decision = &d
		return d, true
	}
	return Decision{}, false
}

// Expire decides at the caller's deadline: a TIMEOUT error that says what
// was seen (node: outcome). After a decision it returns that decision.
func (c *Collector) Expire() Decision {
	if c.decision != nil {
		return *c.decision
	}
	need := fmt.Sprintf("%d identical results", c.rules.signers())
	if c.op == protocol.OpKeygen {
		need = "identical successes from all of " + strings.Join(sortedCopy(c.rules.Nodes), ",")
	}
	reason := "no attested " + c.op + " result before the deadline (need " + need + "); seen: " + c.describe(c.nodes())
	if len(c.seen) == 0 {
		reason = "no attested " + c.op + " result before the deadline (need " + need + "); no node answered"
	}
	d := c.fail(protocol.CodeTimeout, reason, c.nodes())
	c.decision = &d
	return d
}

func (c *Collector) decide() (Decision, bool) {
	nodes := c.nodes()
	var errNodes []string
	groups := map[string][]string{} // equality key -> nodes, for successes
	var order []string              // keys in order of their lowest node
	for _, n := range nodes {
		e := c.seen[n]
		if !e.res.Succeeded() {
			errNodes = append(errNodes, n)
			continue
		}
		if _, ok := groups[e.key]; !ok {
			order = append(order, e.key)
		}
		groups[e.key] = append(groups[e.key], n)
	}
	if c.op == protocol.OpKeygen {
		switch {
		case len(errNodes) > 0:
			return c.attestedError(errNodes, nodes), true
		case len(groups) > 1:
			var parts []string
			for _, k := range order {
				parts = append(parts, strings.Join(groups[k], "+"))
			}
			return c.fail(protocol.CodeResultMismatch, "committee members report different keygen results ("+
				strings.Join(parts, " vs ")+"): "+c.describe(nodes), nodes), true
		case len(order) == 1 && len(groups[order[0]]) == len(c.members):
			return c.success(groups[order[0]]), true
		}
		return Decision{}, false
	}
	need := c.rules.signers()
	for _, k := range order {
		if len(groups[k]) >= need {
			return c.success(groups[k]), true
		}
	}
	if len(errNodes) >= need {
		return c.attestedError(errNodes, nodes), true
	}
	return Decision{}, false
}

// success attests the result of attesters (sorted).
func (c *Collector) success(attesters []string) Decision {
	res := *c.seen[attesters[0]].res
	return Decision{Result: &res, Attestations: c.raws(attesters)}
}

// attestedError decides the most frequent code among errNodes (sorted;
// ties to the code reported by the lowest node id); named are the nodes the
// error lists.
func (c *Collector) attestedError(errNodes, named []string) Decision {
	count := map[string]int{}
	var codes []string
	for _, n := range errNodes {
		code := c.seen[n].res.ErrorCode
		if count[code] == 0 {
			codes = append(codes, code)
		}
		count[code]++
	}
	code := codes[0]
	for _, k := range codes[1:] {
		if count[k] > count[code] {
			code = k
		}
	}
	var by []string
	for _, n := range errNodes {
		if c.seen[n].res.ErrorCode == code {
			by = append(by, n)
		}
	}
	res := *c.seen[by[0]].res
	reason := fmt.Sprintf("%s reported by %s: %s", code, strings.Join(by, ","), c.describe(named))
	return Decision{
		Result:       &res,
		Attestations: c.raws(by),
		Err:          &Error{Code: code, Reason: reason, Nodes: c.outcomes(named)},
	}
}

// fail decides an error of the caller's making (RESULT_MISMATCH, TIMEOUT),
// with the results of nodes as evidence.
func (c *Collector) fail(code, reason string, nodes []string) Decision {
	res := &protocol.Result{Op: c.op, RequestID: c.requestID, ClientID: c.clientID, KeyID: c.keyID}
	if len(nodes) > 0 {
		first := c.seen[nodes[0]].res
		res.WalletID, res.TxID, res.SessionID, res.KeyType = first.WalletID, first.TxID, first.SessionID, first.KeyType
	}
	res.SetError(code, reason)
	return Decision{Result: res, Attestations: c.raws(nodes), Err: &Error{Code: code, Reason: reason, Nodes: c.outcomes(nodes)}}
}

// nodes returns the nodes seen, sorted.
func (c *Collector) nodes() []string { return slices.Sorted(maps.Keys(c.seen)) }

func (c *Collector) raws(nodes []string) [][]byte {
	out := make([][]byte, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, bytes.Clone(c.seen[n].raw))
	}
	return out
}

func (c *Collector) outcomes(nodes []string) map[string]string {
	out := make(map[string]string, len(nodes))
	for _, n := range nodes {
		out[n] = summary(c.seen[n])
	}
	return out
}

func (c *Collector) describe(nodes []string) string {
	parts := make([]string, 0, len(nodes))
	for _, n := range nodes {
		parts = append(parts, n+": "+summary(c.seen[n]))
	}
	return strings.Join(parts, "; ")
}

// maxReason bounds the part of a node's error_reason quoted in a summary.
const maxReason = 200

// summary says what a node reported: its error, or its success's public
// values and a digest of everything compared.
func summary(e *entry) string {
	r := e.res
	if !r.Succeeded() {
		reason := r.ErrorReason
		if len(reason) > maxReason {
			reason = reason[:maxReason] + "..."
		}
		return fmt.Sprintf("error %s (%q)", r.ErrorCode, reason)
	}
	var b strings.Builder
	b.WriteString("success")
	for _, kv := range [][2]string{
		{"ecdsa_pub_key", r.ECDSAPubKey}, {"eddsa_pub_key", r.EdDSAPubKey},
		{"pub_key", r.PubKey}, {"signature", r.Signature},
	} {
		if kv[1] != "" {
			fmt.Fprintf(&b, " %s=%s", kv[0], kv[1])
		}
	}
	if r.NewThreshold != 0 {
		fmt.Fprintf(&b, " new_threshold=%d", r.NewThreshold)
	}
	sum := sha256.Sum256([]byte(e.key))
	fmt.Fprintf(&b, " (result %x)", sum[:6])
	return b.String()
}

// equalityKey is what two successes must share: every member of the raw
// result except node_id and node_signature, canonically ordered. When raw
// does not parse (a caller that passes no bytes), the typed result stands
// in.
func equalityKey(res *protocol.Result, raw []byte) string {
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&obj); err == nil && obj != nil {
		delete(obj, "node_id")
		delete(obj, "node_signature")
		if b, err := json.Marshal(obj); err == nil {
			return string(b)
		}
	}
	cp := *res
	cp.NodeID, cp.NodeSignature = "", ""
	b, _ := json.Marshal(&cp)
	return string(b)
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// Package committee holds the rules that decide which nodes take part in a
// ceremony: keygen needs the whole cluster, signing takes t+1 ready members
// of the wallet's committee chosen the same way on every node, and a reshare
// runs among the ready cluster members once the old committee's holders
// agree on what they hold. The rules are pure functions of the cluster, the
// readiness view and the announcements; they do no I/O.
//
// A broken rule is an error that wraps one of ErrNotMember, ErrNotReady,
// ErrNoHolder or ErrHoldersDiffer; its message is the text the node puts in
// the request's result.
package committee

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strings"
)

// The rules a request can break.
var (
	// ErrNotMember: a node the request names is not in the cluster.
	ErrNotMember = errors.New("committee: not a member of the cluster")
	// ErrNotReady: too few of the nodes a ceremony needs are ready.
	ErrNotReady = errors.New("committee: not enough nodes are ready")
	// ErrNoHolder: no ready node holds the key to reshare.
	ErrNoHolder = errors.New("committee: no ready node holds the key")
	// ErrHoldersDiffer: the holders of the key announced different or
	// malformed shares.
	ErrHoldersDiffer = errors.New("committee: the old committee's members disagree about the wallet")
)

// holdersDiffer starts the message of every ErrHoldersDiffer: the wording
// clients have always received in the result.
const holdersDiffer = "node: the old committee's members disagree about the wallet"

// ruleError is a broken rule: it reads as msg and matches its rule with
// errors.Is.
type ruleError struct {
	rule error
	msg  string
}

func (e *ruleError) Error() string { return e.msg }
func (e *ruleError) Unwrap() error { return e.rule }

func broken(rule error, format string, args ...any) error {
	return &ruleError{rule: rule, msg: fmt.Sprintf(format, args...)}
}

// Keygen checks that every node of the cluster is ready: keygen creates one
// share per cluster member. The first member that is not ready is named.
func Keygen(cluster []string, ready map[string]bool) error {
	for _, c := range cluster {
		if !ready[c] {
			return broken(ErrNotReady, "keygen needs every committee member; %s is not ready", c)
		}
	}
	return nil
}

// Signers picks exactly t+1 ready members of committee to sign requestID.
// Every node with the same readiness view picks the same set: the ready
// members are ordered by the hex SHA-256 of requestID|member, the first t+1
// are taken, and they are returned sorted. committee is not modified.
func Signers(requestID string, committee []string, ready map[string]bool, t int) ([]string, error) {
	if t < 0 {
		return nil, fmt.Errorf("committee: threshold %d is negative", t)
	}
	score := map[string]string{}
	var cands []string
	for _, c := range committee {
		if ready[c] {
			h := sha256.Sum256([]byte(requestID + "|" + c))
			score[c] = hex.EncodeToString(h[:])
			cands = append(cands, c)
		}
	}
	if len(cands) < t+1 {
		return nil, broken(ErrNotReady, "fewer than %d committee members are ready", t+1)
	}
	slices.SortFunc(cands, func(a, b string) int { return strings.Compare(score[a], score[b]) })
	out := slices.Clip(cands[:t+1])
	slices.Sort(out)
	return out, nil
}

// Rerun picks the t+1 signers of attempt (1 and up) of requestID, after
// an attempt failed for want of the excluded nodes: committee members not
// excluded, the ready ones first, each group ordered by the hex SHA-256 of
// requestID#attempt|member, returned sorted. Fewer than t+1 members left
// is ErrNotReady. The node that plans the attempt calls it; the others
// follow its plan, so their readiness views need not agree.
func Rerun(requestID string, attempt int, committee, excluded []string, ready map[string]bool, t int) ([]string, error) {
	if t < 0 {
		return nil, fmt.Errorf("committee: threshold %d is negative", t)
	}
	salt := fmt.Sprintf("%s#%d|", requestID, attempt)
	score := map[string]string{}
	var cands []string
	for _, c := range committee {
		if slices.Contains(excluded, c) {
			continue
		}
		h := sha256.Sum256([]byte(salt + c))
		score[c] = hex.EncodeToString(h[:])
		cands = append(cands, c)
	}
	if len(cands) < t+1 {
		return nil, broken(ErrNotReady, "fewer than %d committee members are left after excluding %v", t+1, excluded)
	}
	slices.SortFunc(cands, func(a, b string) int {
		if ready[a] != ready[b] {
			if ready[a] {
				return -1
			}
			return 1
		}
		return strings.Compare(score[a], score[b])
	})
	out := slices.Clip(cands[:t+1])
	slices.Sort(out)
	return out, nil
}

// ReshareParticipants returns the nodes that join a reshare to newCommittee:
// every cluster member that is ready, and self, in cluster order. Every node
// of the cluster computes this set alone, so that a node new to the wallet
// joins without knowing the old committee. Each member of newCommittee must
// be in the cluster (ErrNotMember) and take part (ErrNotReady); the first
// that is not is named.
func ReshareParticipants(cluster []string, self string, ready map[string]bool, newCommittee []string) ([]string, error) {
	for _, id := range newCommittee {
		if !slices.Contains(cluster, id) {
			return nil, broken(ErrNotMember, "node %s is not a member of this cluster", id)
		}
	}
	var parts []string
	for _, c := range cluster {
		if ready[c] || c == self {
			parts = append(parts, c)
		}
	}
	for _, id := range newCommittee {
		if !slices.Contains(parts, id) {
			return nil, broken(ErrNotReady, "the new committee member %s is not ready", id)
		}
	}
	return parts, nil
}

// Holding is what one reshare participant announced it holds of the
// wallet's key type: nothing (Holds false), or its active share's epoch,
// committee, threshold t, hex public key, hex share key (the share's
// x-coordinate) and the wallet's owner (the client ID that created it, ""
// for a legacy client).
type Holding struct {
	Holds     bool
	Epoch     uint64
	Committee []string
	Threshold int
	PubKey    string
	ShareKey  string
	Owner     string
}

// Plan is what the holders of a key agree on before a reshare: the old
// parties (sorted) with their share keys, the old threshold t, the epoch
// they hold, the public key and the wallet's owner (a reshare never changes
// it: every participant checks the requester against it, and new members
// record it).
type Plan struct {
	Old          []string
	Keys         map[string]*big.Int
	OldThreshold int
	Epoch        uint64
	PubKey       []byte
	Owner        string
}

// PlanReshare derives the plan from every participant's announcement
// (node ID -> holding); every node computes the same plan from the same
// announcements. Non-holders are ignored. The holders, taken in sorted
// order, must announce the same epoch, committee, threshold, public key and
// owner, each must be in the committee it announces and have a hex share
// key, and the public key must be non-empty hex (ErrHoldersDiffer). Without
// a holder the error is ErrNoHolder (keyType and walletID name the key);
// with fewer than threshold+1 holders, ErrNotReady.
func PlanReshare(holdings map[string]Holding, keyType, walletID string) (*Plan, error) {
	var ref *Holding
	p := &Plan{Keys: map[string]*big.Int{}}
	for _, id := range slices.Sorted(maps.Keys(holdings)) {
		h := holdings[id]
		if !h.Holds {
			continue
		}
		if ref == nil {
			ref = &h
		} else if h.Epoch != ref.Epoch || h.Threshold != ref.Threshold || h.PubKey != ref.PubKey || !slices.Equal(h.Committee, ref.Committee) {
			return nil, broken(ErrHoldersDiffer, "%s: %s has epoch %d, committee %v, threshold %d; another holder has epoch %d, committee %v, threshold %d",
				holdersDiffer, id, h.Epoch, h.Committee, h.Threshold, ref.Epoch, ref.Committee, ref.Threshold)
		} else if h.Owner != ref.Owner {
			return nil, broken(ErrHoldersDiffer, "%s: %s and another holder name different owners", holdersDiffer, id)
		}
		if !slices.Contains(h.Committee, id) {
			return nil, broken(ErrHoldersDiffer, "%s: %s holds a share outside its committee", holdersDiffer, id)
		}
		k, ok := new(big.Int).SetString(h.ShareKey, 16)
		if !ok {
			return nil, broken(ErrHoldersDiffer, "%s: %s announced a malformed share key", holdersDiffer, id)
		}
		p.Old = append(p.Old, id)
		p.Keys[id] = k
	}
	if ref == nil {
		return nil, broken(ErrNoHolder, "no ready node holds a %s key of wallet %s", keyType, walletID)
	}
	p.OldThreshold, p.Epoch, p.Owner = ref.Threshold, ref.Epoch, ref.Owner
	if len(p.Old) < p.OldThreshold+1 {
		return nil, broken(ErrNotReady, "%d of the old committee %v are ready, %d needed", len(p.Old), ref.Committee, p.OldThreshold+1)
	}
	pub, err := hex.DecodeString(ref.PubKey)
	if err != nil || len(pub) == 0 {
		return nil, broken(ErrHoldersDiffer, "%s: malformed public key", holdersDiffer)
	}
	p.PubKey = pub
	return p, nil
}

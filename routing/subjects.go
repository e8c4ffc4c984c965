package routing

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/hwsigner/signer/protocol"
)

// Names of the JetStream resources.
const (
	RequestStream = "MPC_REQUESTS"
	ResultStream  = "MPC_RESULTS"
	AttemptStream = "MPC_ATTEMPTS"
	ReadyBucket   = "mpc_ready"
)

// Subject tokens.
const (
	keygenRequestToken  = "keygen_request"
	signingRequestToken = "signing_request"
	reshareRequestToken = "reshare_request"
	keygenResultToken   = "mpc_keygen_result"
	signingResultToken  = "mpc_signing_result"
	reshareResultToken  = "mpc_reshare_result"
	signingComplete     = "complete"
	roundToken          = "round"
	attemptToken        = "attempt"
	subjectRoot         = "mpc"
)

// ErrInvalidSubject: a subject or name could not be built or parsed. Errors
// about identifiers also wrap protocol.ErrInvalidToken.
var ErrInvalidSubject = errors.New("routing: invalid subject")

func tokenErr(what, value string, err error) error {
	return fmt.Errorf("%w: %s %q: %w", ErrInvalidSubject, what, value, err)
}

func requestToken(op string) (string, error) {
	switch op {
	case protocol.OpKeygen:
		return keygenRequestToken, nil
	case protocol.OpSign:
		return signingRequestToken, nil
	case protocol.OpReshare:
		return reshareRequestToken, nil
	}
	return "", fmt.Errorf("%w: %w: %q", ErrInvalidSubject, protocol.ErrUnknownOp, op)
}

func resultToken(op string) (string, error) {
	switch op {
	case protocol.OpKeygen:
		return keygenResultToken, nil
	case protocol.OpSign:
		return signingResultToken, nil
	case protocol.OpReshare:
		return reshareResultToken, nil
	}
	return "", fmt.Errorf("%w: %w: %q", ErrInvalidSubject, protocol.ErrUnknownOp, op)
}

// RequestSubject returns mpc.<keygen|signing|reshare>_request.<walletID>.
func RequestSubject(op, walletID string) (string, error) {
	tok, err := requestToken(op)
	if err != nil {
		return "", err
	}
	if err := protocol.ValidToken(walletID); err != nil {
		return "", tokenErr("walletID", walletID, err)
	}
	return subjectRoot + "." + tok + "." + walletID, nil
}

// KeygenRequestSubject returns mpc.keygen_request.<walletID>.
func KeygenRequestSubject(walletID string) (string, error) {
	return RequestSubject(protocol.OpKeygen, walletID)
}

// SigningRequestSubject returns mpc.signing_request.<walletID>.
func SigningRequestSubject(walletID string) (string, error) {
	return RequestSubject(protocol.OpSign, walletID)
}

// ReshareRequestSubject returns mpc.reshare_request.<walletID>.
func ReshareRequestSubject(walletID string) (string, error) {
	return RequestSubject(protocol.OpReshare, walletID)
}

// ParseRequestSubject splits a request subject into its op and walletID. A
// node checks them against the request body (op, wallet_id).
func ParseRequestSubject(subject string) (op, walletID string, err error) {
	parts := strings.Split(subject, ".")
	if len(parts) != 3 || parts[0] != subjectRoot {
		return "", "", fmt.Errorf("%w: %q is not a request subject", ErrInvalidSubject, subject)
	}
	switch parts[1] {
	case keygenRequestToken:
		op = protocol.OpKeygen
	case signingRequestToken:
		op = protocol.OpSign
	case reshareRequestToken:
		op = protocol.OpReshare
	default:
		return "", "", fmt.Errorf("%w: %q is not a request subject", ErrInvalidSubject, subject)
	}
	if err := protocol.ValidToken(parts[2]); err != nil {
		return "", "", tokenErr("walletID", parts[2], err)
	}
	return op, parts[2], nil
}

// RoundSubject returns mpc.round.<sessionID>.<nodeID>: the core NATS subject
// on which node nodeID receives the round messages of ceremony session
// sessionID (not part of any stream).
func RoundSubject(sessionID, nodeID string) (string, error) {
	if err := protocol.ValidToken(sessionID); err != nil {
		return "", tokenErr("sessionID", sessionID, err)
	}
	if err := protocol.ValidToken(nodeID); err != nil {
		return "", tokenErr("nodeID", nodeID, err)
	}
	return subjectRoot + "." + roundToken + "." + sessionID + "." + nodeID, nil
}

// ParseRoundSubject splits a round subject into its sessionID and the nodeID
// of the recipient.
func ParseRoundSubject(subject string) (sessionID, nodeID string, err error) {
	parts := strings.Split(subject, ".")
	if len(parts) != 4 || parts[0] != subjectRoot || parts[1] != roundToken {
		return "", "", fmt.Errorf("%w: %q is not a round subject", ErrInvalidSubject, subject)
	}
	if err := protocol.ValidToken(parts[2]); err != nil {
		return "", "", tokenErr("sessionID", parts[2], err)
	}
	if err := protocol.ValidToken(parts[3]); err != nil {
		return "", "", tokenErr("nodeID", parts[3], err)
	}
	return parts[2], parts[3], nil
}

// AllRoundsSubject returns mpc.round.>: the round messages of every session
// to every node.
func AllRoundsSubject() string { return subjectRoot + "." + roundToken + ".>" }

// AttemptSubject returns mpc.attempt.<digest>: the subject of MPC_ATTEMPTS
// on which the nodes plan the re-runs of one client's request (digest: 32
// hex digits of SHA-256 over clientID and requestID, so that any IDs make a
// valid token and the subject is the same on every node).
func AttemptSubject(clientID, requestID string) string {
	return subjectRoot + "." + attemptToken + "." + digest([]byte(clientID+"\x00"+requestID))
}

// AttemptStreamSubjects returns the subjects of MPC_ATTEMPTS.
func AttemptStreamSubjects() []string {
	return []string{subjectRoot + "." + attemptToken + ".*"}
}

// scoped returns "<clientID>." for a client with an ID and "" for a legacy
// client.
func scoped(clientID string) (string, error) {
	if clientID == "" {
		return "", nil
	}
	if err := protocol.ValidToken(clientID); err != nil {
		return "", tokenErr("clientID", clientID, err)
	}
	return clientID + ".", nil
}

// KeygenResultSubject returns mpc.mpc_keygen_result.<walletID>, or
// mpc.mpc_keygen_result.<clientID>.<walletID> when clientID is not "".
func KeygenResultSubject(clientID, walletID string) (string, error) {
	prefix, err := scoped(clientID)
	if err != nil {
		return "", err
	}
	if err := protocol.ValidToken(walletID); err != nil {
		return "", tokenErr("walletID", walletID, err)
	}
	return subjectRoot + "." + keygenResultToken + "." + prefix + walletID, nil
}

// SigningResultSubject returns mpc.mpc_signing_result.complete, or
// mpc.mpc_signing_result.<clientID>.complete when clientID is not "".
func SigningResultSubject(clientID string) (string, error) {
	prefix, err := scoped(clientID)
	if err != nil {
		return "", err
	}
	return subjectRoot + "." + signingResultToken + "." + prefix + signingComplete, nil
}

// ReshareResultSubject returns mpc.mpc_reshare_result.<sessionID>, or
// mpc.mpc_reshare_result.<clientID>.<sessionID> when clientID is not "".
func ReshareResultSubject(clientID, sessionID string) (string, error) {
	prefix, err := scoped(clientID)
	if err != nil {
		return "", err
	}
	if err := protocol.ValidToken(sessionID); err != nil {
		return "", tokenErr("sessionID", sessionID, err)
	}
	return subjectRoot + "." + reshareResultToken + "." + prefix + sessionID, nil
}

// ResultSubject returns the subject a result is published on, from its op,
// client_id and wallet_id (keygen) or session_id (reshare).
func ResultSubject(res *protocol.Result) (string, error) {
	if res == nil {
		return "", fmt.Errorf("%w: nil result", ErrInvalidSubject)
	}
	switch res.Op {
	case protocol.OpKeygen:
		return KeygenResultSubject(res.ClientID, res.WalletID)
	case protocol.OpSign:
		return SigningResultSubject(res.ClientID)
	case protocol.OpReshare:
		return ReshareResultSubject(res.ClientID, res.SessionID)
	}
	return "", fmt.Errorf("%w: %w: %q", ErrInvalidSubject, protocol.ErrUnknownOp, res.Op)
}

// ResultFilterSubject returns the filter of a client's result consumer for
// op: mpc.mpc_keygen_result.<clientID>.*, mpc.mpc_signing_result.<clientID>.complete,
// mpc.mpc_reshare_result.<clientID>.*; for a legacy client (clientID "")
// mpc.mpc_keygen_result.*, mpc.mpc_signing_result.complete, mpc.mpc_reshare_result.*.
func ResultFilterSubject(op, clientID string) (string, error) {
	tok, err := resultToken(op)
	if err != nil {
		return "", err
	}
	prefix, err := scoped(clientID)
	if err != nil {
		return "", err
	}
	last := "*"
	if op == protocol.OpSign {
		last = signingComplete
	}
	return subjectRoot + "." + tok + "." + prefix + last, nil
}

// RequestStreamSubjects returns the subjects of MPC_REQUESTS.
func RequestStreamSubjects() []string {
	return []string{
		subjectRoot + "." + keygenRequestToken + ".*",
		subjectRoot + "." + signingRequestToken + ".*",
		subjectRoot + "." + reshareRequestToken + ".*",
	}
}

// ResultStreamSubjects returns the subjects of MPC_RESULTS.
func ResultStreamSubjects() []string {
	return []string{
		subjectRoot + "." + keygenResultToken + ".>",
		subjectRoot + "." + signingResultToken + ".>",
		subjectRoot + "." + reshareResultToken + ".>",
	}
}

// RequestMsgID is the Nats-Msg-Id of a signed request: scoped by client and bound to the exact bytes,
// so that junk published under a guessed id cannot suppress the real request.
func RequestMsgID(clientID, requestID string, raw []byte) string {
	return "req." + clientID + "." + requestID + "." + digest(raw)
}

// ResultMsgID is the Nats-Msg-Id of one node's signed result: one per node, scoped by client and bound
// to the exact bytes (a node's retries of the same bytes dedupe; junk cannot collide).
func ResultMsgID(clientID, requestID, nodeID string, raw []byte) string {
	return "result." + clientID + "." + requestID + "." + nodeID + "." + digest(raw)
}

// digest returns the first 32 hex digits of SHA-256(raw).
func digest(raw []byte) string {
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])[:32]
}

// Package protocol defines the wire format shared by backends (the client
// package), nodes and relays: the request and result JSON types, the
// canonical encoding the signatures cover, request signatures by client keys
// (Ed25519 or ECDSA P-256 behind a crypto.Signer), result signatures by node
// identity keys and the stable error codes. The node-side client policy that
// binds client keys to clientIDs and operations is package policy; the text
// forms of the keys (PEM, base64) are package keyfile.
//
// The canonical encoding is specified in docs/canonical-encoding.md and the
// error codes in docs/error-codes.md.
//
// Node-side flow for one request message:
//
//	req, err := protocol.DecodeRequest(op, raw)      // nil req: drop, count
//	pub, aerr := policy.Authorize(req.Env().KeyID, req.Env().ClientID, op)
//	                                                  // pub == nil: unknown key, drop, count
//	if protocol.VerifyRequest(raw, pub) != nil { ... } // drop, count (INVALID_SIGNATURE, never sent)
//	if aerr != nil { ... }  // UNAUTHORIZED_CLIENT to policy.PrimaryClientID(keyID)
//	if err != nil { ... }   // BAD_REQUEST
//	if req.Env().CheckTime(now, skew) != nil { ... } // EXPIRED
package protocol

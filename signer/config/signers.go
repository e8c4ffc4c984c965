package config

// Signers is the number of nodes that must take part in a signature: the
// t+1 of a threshold scheme in which t shares reveal nothing. It is the unit
// an operator sees: the config file's "threshold", `signerd dev
// --threshold`, `signerctl reshare --threshold`, the "threshold" of
// cluster.json, the THRESHOLD column of `signerctl store inspect`, and
// node.Config.Signers and devcluster.Options.Signers in Go.
//
// tss-lib counts t instead, and so does everything that reaches it or is
// stored next to it: ceremony.Session.Threshold and
// ceremony.ReshareSession's thresholds, store.WalletMeta.Threshold (the
// store's format), the reshare request's new_threshold on the wire
// (protocol.ReshareRequest.NewThreshold, client.ReshareParams.NewThreshold)
// and the nodes' reshare control messages. TSSThreshold and SignersFromTSS
// convert between the two units.
type Signers int

// MinSigners is the smallest number of signers a cluster may require: with
// one, a single share would be the whole key.
const MinSigners Signers = 2

// TSSThreshold returns tss-lib's t for s signers: s-1.
func (s Signers) TSSThreshold() int { return int(s) - 1 }

// SignersFromTSS returns the number of signers for tss-lib's threshold t:
// t+1.
func SignersFromTSS(t int) Signers { return Signers(t + 1) }

// Fits reports whether s signers can be chosen among nodes nodes:
// MinSigners <= s <= nodes.
func (s Signers) Fits(nodes int) bool { return s >= MinSigners && int(s) <= nodes }

package routing

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hwsigner/signer/protocol"
)

// KeysBucket is the KV bucket of key confirmations: every committee member
// that sealed a share of a wallet's key type (keygen or reshare) puts its
// signed protocol.KeyConfirmation there, under ConfirmationKey. Entries
// never expire: a node that was away during a reshare reads them later.
const KeysBucket = "mpc_keys"

// MaxConfirmationSize bounds one entry of KeysBucket (an honest
// confirmation of a 64-member committee is under 2 KiB).
const MaxConfirmationSize = 16 << 10

// KeysBucketConfig is the configuration of KeysBucket: history 1 (a
// member's newer confirmation of the same epoch replaces the older one), no
// TTL, the storage and replicas of the streams.
func KeysBucketConfig(o StreamOptions) jetstream.KeyValueConfig {
	o = o.withDefaults()
	return jetstream.KeyValueConfig{
		Bucket:       KeysBucket,
		Description:  "signed key confirmations of committee members (wallet.keytype.epoch.node)",
		History:      1,
		MaxValueSize: MaxConfirmationSize,
		Storage:      o.Storage,
		Replicas:     o.Replicas,
	}
}

// EnsureKeysBucket creates KeysBucket when it is missing and returns it; an
// existing bucket is used as it is. Each step has a short deadline and is
// retried until ctx ends, as in EnsureReadyBucket.
func EnsureKeysBucket(ctx context.Context, js jetstream.JetStream, o StreamOptions) (jetstream.KeyValue, error) {
	cfg := KeysBucketConfig(o)
	for {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		kv, err := js.KeyValue(sctx, KeysBucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = js.CreateKeyValue(sctx, cfg)
			if errors.Is(err, jetstream.ErrBucketExists) {
				err = context.DeadlineExceeded // another node made it: look again
			}
		}
		cancel()
		if err == nil {
			return kv, nil
		}
		if ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("routing: kv bucket %s: %w", KeysBucket, err)
		}
	}
}

// ConfirmationKey is the KeysBucket key of one member's confirmation of a
// wallet's key type at an epoch: <walletID>.<keyType>.<epoch>.<nodeID>.
func ConfirmationKey(walletID, keyType string, epoch uint64, nodeID string) (string, error) {
	if err := protocol.ValidToken(walletID); err != nil {
		return "", tokenErr("walletID", walletID, err)
	}
	if !protocol.ValidKeyType(keyType) {
		return "", fmt.Errorf("%w: key type %q", ErrInvalidSubject, keyType)
	}
	if err := protocol.ValidToken(nodeID); err != nil {
		return "", tokenErr("nodeID", nodeID, err)
	}
	if epoch < 1 {
		return "", fmt.Errorf("%w: epoch 0", ErrInvalidSubject)
	}
	return walletID + "." + keyType + "." + strconv.FormatUint(epoch, 10) + "." + nodeID, nil
}

// ConfirmationsFilter is the KeysBucket key filter of every confirmation of
// a wallet's key type, all epochs and nodes.
func ConfirmationsFilter(walletID, keyType string) (string, error) {
	if err := protocol.ValidToken(walletID); err != nil {
		return "", tokenErr("walletID", walletID, err)
	}
	if !protocol.ValidKeyType(keyType) {
		return "", fmt.Errorf("%w: key type %q", ErrInvalidSubject, keyType)
	}
	return walletID + "." + keyType + ".>", nil
}

// ParseConfirmationKey splits a KeysBucket key into its wallet, key type,
// epoch and node.
func ParseConfirmationKey(key string) (walletID, keyType string, epoch uint64, nodeID string, err error) {
	parts := strings.Split(key, ".")
	if len(parts) != 4 {
		return "", "", 0, "", fmt.Errorf("%w: confirmation key %q", ErrInvalidSubject, key)
	}
	epoch, perr := strconv.ParseUint(parts[2], 10, 64)
	if perr != nil || strconv.FormatUint(epoch, 10) != parts[2] {
		return "", "", 0, "", fmt.Errorf("%w: confirmation key %q: epoch", ErrInvalidSubject, key)
	}
	if _, err := ConfirmationKey(parts[0], parts[1], epoch, parts[3]); err != nil {
		return "", "", 0, "", err
	}
	return parts[0], parts[1], epoch, parts[3], nil
}

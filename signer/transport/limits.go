package transport

// Limits bound what one session holds for messages it has not handled yet,
// so that a flood on its round subject (anyone with node NATS credentials
// can publish there, and session IDs are predictable from request IDs)
// costs the node bounded memory. A message over a limit is dropped and
// counted (DropTooLarge, DropOverflow); where the limit can be checked
// before the message is decoded and its signature verified, it is.
//
// The defaults are far above what honest ceremonies need. Measured over NATS
// (TestHonestRoundMessageSizes): the largest round message is an ECDSA
// reshare's DGRound2Message1 broadcast, 234,168 bytes on the wire, then the
// ECDSA keygen's KGRound1Message, 178,568 bytes (both carry a new Paillier
// key's proofs and do not grow with the committee); ECDSA signing messages
// stay under 10 KB; a 5-node keygen or reshare delivers at most 4 such
// large messages at once to one node. A zero field takes its default.
//
// With the defaults a session holds at most about 50 MiB however it is
// flooded (32 pending, 8 queued, 8 in the inbox, 2 waiting for a hello);
// the limits are per session, so a node's bound grows with the sessions it
// runs at once.
type Limits struct {
	// MaxMessageBytes: a round message larger than this is dropped
	// unread (DropTooLarge). Default 384 KiB, 1.68 times the largest
	// honest message.
	MaxMessageBytes int
	// PendingMsgs and PendingBytes are the NATS subscription's pending
	// limits: messages received but not yet seen by its callback, junk
	// included (the callback drops an oversized one at once, but only
	// once it runs). nats.go drops the excess unread; the session counts
	// it (DropOverflow). Default 4096 messages, 32 MiB: a flood must fit
	// while the callback's goroutine waits for a CPU. With 8 MiB, a 4 s
	// flood of about 130 MiB/s overflowed it, and lost honest messages,
	// on the shared 2-core test machine during an ECDSA keygen.
	PendingMsgs, PendingBytes int
	// QueueMsgs and QueueBytes bound the received messages under the size
	// cap that wait to be decoded and verified (the subscription's
	// callback only checks sizes and room, and queues). Default 1024
	// messages, 8 MiB.
	QueueMsgs, QueueBytes int
	// InboxMsgs and InboxBytes bound the authenticated messages waiting
	// for the ceremony to read them. Once either is reached, further
	// messages are dropped before they are decoded (DropOverflow).
	// Default 1024 messages, 8 MiB.
	InboxMsgs, InboxBytes int
	// EarlyMsgs and EarlyBytes bound the authenticated P2P messages
	// waiting for their sender's hello (its session key); honest peers
	// send a few small ones early. Default 256 messages, 2 MiB.
	EarlyMsgs, EarlyBytes int
	// PerPeerMsgs is how many messages one peer's identity may get
	// accepted in one session (it bounds the replay-detection state).
	// Honest peers send a few dozen (hellos included). Default 4096.
	PerPeerMsgs int
}

// DefaultLimits returns the limits a zero Config.Limits means.
func DefaultLimits() Limits {
	return Limits{
		MaxMessageBytes: 384 << 10,
		PendingMsgs:     4096,
		PendingBytes:    32 << 20,
		QueueMsgs:       1024,
		QueueBytes:      8 << 20,
		InboxMsgs:       1024,
		InboxBytes:      8 << 20,
		EarlyMsgs:       256,
		EarlyBytes:      2 << 20,
		PerPeerMsgs:     4096,
	}
}

// withDefaults fills every zero field of l from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	for _, f := range []struct{ v, d *int }{
		{&l.MaxMessageBytes, &d.MaxMessageBytes},
		{&l.PendingMsgs, &d.PendingMsgs}, {&l.PendingBytes, &d.PendingBytes},
		{&l.QueueMsgs, &d.QueueMsgs}, {&l.QueueBytes, &d.QueueBytes},
		{&l.InboxMsgs, &d.InboxMsgs}, {&l.InboxBytes, &d.InboxBytes},
		{&l.EarlyMsgs, &d.EarlyMsgs}, {&l.EarlyBytes, &d.EarlyBytes},
		{&l.PerPeerMsgs, &d.PerPeerMsgs},
	} {
		if *f.v <= 0 {
			*f.v = *f.d
		}
	}
	return l
}

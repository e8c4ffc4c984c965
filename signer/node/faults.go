package node

// Faults injects failures at chosen points of a ceremony, for tests: a
// node stopped exactly between two steps of a reshare cannot be produced
// reliably from outside. Production leaves Config.Faults nil; the signerd
// config file cannot set it.
type Faults struct {
	// Reshare, when set, is called at each FaultPoint of a reshare on this
	// node and says what the node does there.
	Reshare func(point FaultPoint, walletID, keyType string, epoch uint64) FaultAction
}

// FaultPoint names a point of a reshare on a new committee member.
type FaultPoint string

// The points Faults.Reshare is called at.
const (
	// AfterSealPending: the member sealed its new share as pending at the
	// new epoch; it has neither published its key confirmation nor
	// announced "sealed".
	AfterSealPending FaultPoint = "sealed_pending"
	// AfterAnnounceSealed: the member published its key confirmation and
	// announced "sealed"; it has not yet waited for the other members'.
	AfterAnnounceSealed FaultPoint = "announced_sealed"
)

// FaultAction is what a node does at a FaultPoint.
type FaultAction int

// Fault actions.
const (
	// FaultContinue goes on as usual.
	FaultContinue FaultAction = iota
	// FaultFail gives up there, telling the peers ("failed"), as any
	// failure at that point would.
	FaultFail
	// FaultCrash leaves the reshare there as a node that crashed at that
	// point would: it tells no peer, switches no epoch and publishes no
	// result (stop the node afterwards to complete the picture).
	FaultCrash
)

// reshareFault asks cfg.Faults what to do at point.
func (n *Node) reshareFault(point FaultPoint, walletID, keyType string, epoch uint64) FaultAction {
	if n.cfg.Faults == nil || n.cfg.Faults.Reshare == nil {
		return FaultContinue
	}
	act := n.cfg.Faults.Reshare(point, walletID, keyType, epoch)
	if act != FaultContinue {
		n.log.Warn("test fault injected", "point", string(point), "wallet", walletID, "key_type", keyType, "epoch", epoch, "action", int(act))
	}
	return act
}

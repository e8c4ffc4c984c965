package relay

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go/jetstream"
)

// Close codes of GET /v1/ws beside the standard ones.
const (
	// wsCloseSlowReader: the send queue filled up or a write timed out
	// (1008 policy violation): reconnect with ?after=<last cursor>.
	wsCloseSlowReader = websocket.StatusPolicyViolation
	// wsCloseHistory: the history is not reachable (1013 try again later).
	wsCloseHistory = websocket.StatusTryAgainLater
	// wsPull: decisions the history consumer of one connection fetches
	// ahead of its send queue.
	wsPull = 64
)

// handleWS serves GET /v1/ws: the caller's decisions as WebSocket text
// messages, each a long-poll item {"cursor": N, "result": ..., "attestations":
// [...], "nodes": {...}}, as they arrive, starting after ?after=CURSOR (or
// at the start of the retained history). Reconnecting with the last cursor
// received resumes with nothing lost or repeated, as SSE's Last-Event-ID.
// The bearer token is checked before the upgrade (401 otherwise, and the
// stream is the token's clientID's only). The relay pings every
// websocket.ping_interval; at most websocket.send_queue decisions (and 64
// fetched ahead) wait for one connection, and a reader that leaves the
// queue full for websocket.write_timeout (or a write that takes that long)
// is disconnected with close code 1008: a slow reader never grows the
// relay's memory. Clients send nothing: a
// data message from the client closes the connection (1008).
func (r *Relay) handleWS(w http.ResponseWriter, req *http.Request) {
	clientID, ok := r.authGet(w, req)
	if !ok {
		return
	}
	cursor, err := parseCursor(req.URL.Query().Get("after"))
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeBadCursor, err.Error())
		return
	}
	cfg := r.cfg.WebSocket
	// The history consumer lives as long as the connection, not the
	// request context (which the upgrade keeps but a hijack may end).
	cctx, cancel := context.WithCancel(req.Context())
	defer cancel()
	cons, err := r.historyAfter(cctx, clientID, cursor)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, CodeNATSUnavailable, "the result history is not reachable")
		return
	}
	c, err := websocket.Accept(w, req, nil)
	if err != nil {
		return // Accept answered the request (400, 426 or 403)
	}
	defer c.CloseNow()
	ctx := c.CloseRead(cctx)

	reason := "peer"
	defer func() { r.m.wsClosed.WithLabelValues(clientID, reason).Inc() }()
	send := make(chan historyEntry, cfg.SendQueue)
	full := make(chan struct{})
	var fullOnce bool // set under the consume callback's goroutine only
	cc, err := cons.Consume(func(m jetstream.Msg) {
		e, err := entryOf(m)
		if err != nil || !e.Attested || fullOnce {
			return
		}
		select {
		case send <- e:
			return
		default:
		}
		// Full: the writer gets write_timeout to make room (the consumer
		// waits meanwhile, holding at most wsPull more).
		t := time.NewTimer(cfg.WriteTimeout)
		defer t.Stop()
		select {
		case send <- e:
		case <-ctx.Done():
		case <-t.C:
			fullOnce = true
			close(full)
		}
	}, jetstream.PullMaxMessages(wsPull))
	if err != nil {
		reason = "history"
		_ = c.Close(wsCloseHistory, "the result history is not reachable")
		return
	}
	defer cc.Stop()
	r.m.ws.Inc()
	defer r.m.ws.Dec()

	slow := func() {
		reason = "slow_reader"
		r.log.Info("websocket: slow reader disconnected", "client_id", clientID)
		_ = c.Close(wsCloseSlowReader, "slow reader: send queue full; reconnect with ?after=<last cursor>")
	}
	ping := time.NewTicker(cfg.PingInterval)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			if req.Context().Err() != nil {
				reason = "shutdown"
				_ = c.Close(websocket.StatusGoingAway, "signer-relay is shutting down; reconnect with ?after=<last cursor>")
			}
			return
		case <-full:
			slow()
			return
		case <-ping.C:
			pctx, pcancel := context.WithTimeout(ctx, cfg.WriteTimeout)
			err := c.Ping(pctx)
			pcancel()
			if err != nil {
				if ctx.Err() == nil {
					reason = "ping_timeout"
				}
				return
			}
		case e := <-send:
			b, err := wsMessage(e)
			if err != nil {
				continue // not a Delivery: never sent
			}
			wctx, wcancel := context.WithTimeout(ctx, cfg.WriteTimeout)
			err = c.Write(wctx, websocket.MessageText, b)
			timedOut := errors.Is(wctx.Err(), context.DeadlineExceeded)
			wcancel()
			if err != nil {
				if timedOut {
					reason = "slow_reader"
					r.log.Info("websocket: slow reader disconnected (write timeout)", "client_id", clientID)
				}
				return
			}
		}
	}
}

// wsMessage is the text of one WebSocket message: a long-poll item.
func wsMessage(e historyEntry) ([]byte, error) {
	var d Delivery
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return nil, err
	}
	return json.Marshal(polled{Cursor: e.Cursor, Delivery: d})
}

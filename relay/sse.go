package relay

import (
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// sseKeepAlive: a comment line this often keeps proxies from closing an idle
// stream.
const sseKeepAlive = 15 * time.Second

// handleEvents serves GET /v1/events: the caller's results as Server-Sent
// Events "id: <cursor>\nevent: result\ndata: <Delivery JSON>\n\n", starting
// after Last-Event-ID (or ?after=), or at the start of the retained history.
// Reconnecting with the last id received resumes with nothing lost or
// repeated.
func (r *Relay) handleEvents(w http.ResponseWriter, req *http.Request) {
	clientID, ok := r.authGet(w, req)
	if !ok {
		return
	}
	from := req.Header.Get("Last-Event-ID")
	if from == "" {
		from = req.URL.Query().Get("after")
	}
	cursor, err := parseCursor(from)
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeBadCursor, err.Error())
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "INTERNAL", "streaming unsupported")
		return
	}
	ctx := req.Context()
	cons, err := r.historyAfter(ctx, clientID, cursor)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, CodeNATSUnavailable, "the result history is not reachable")
		return
	}
	ch := make(chan historyEntry, 64)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		e, err := entryOf(m)
		if err != nil {
			return
		}
		select {
		case ch <- e:
		case <-ctx.Done():
		}
	}, jetstream.PullMaxMessages(64))
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, CodeNATSUnavailable, "the result history is not reachable")
		return
	}
	defer cc.Stop()
	r.m.streams.Inc()
	defer r.m.streams.Dec()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 2000\n\n")
	fl.Flush()
	tick := time.NewTicker(sseKeepAlive)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			fl.Flush()
		case e := <-ch:
			if !e.Attested {
				continue
			}
			// Deliveries are single-line JSON (raw newlines are escaped).
			if _, err := fmt.Fprintf(w, "id: %d\nevent: result\ndata: %s\n\n", e.Cursor, e.Data); err != nil {
				return
			}
			fl.Flush()
		}
	}
}

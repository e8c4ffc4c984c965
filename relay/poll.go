package relay

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Long-polling limits.
const (
	maxPollWait  = 60 * time.Second
	defPollLimit = 100
	maxPollLimit = 1000
)

// polled is one item of a long poll: a Delivery with its cursor,
// {"cursor": 7, "result": {...}, "attestations": [...]}.
type polled struct {
	Cursor uint64 `json:"cursor"`
	Delivery
}

type pollAnswer struct {
	Results []polled `json:"results"`
	// NextCursor: pass it as ?after= next time (the last cursor returned,
	// or the request's own when nothing came).
	NextCursor uint64 `json:"next_cursor"`
}

// handleResults serves GET /v1/results?after=CURSOR&wait=30s&limit=100: the
// caller's decisions (Delivery, each with its cursor) after CURSOR, answered
// as soon as one exists or when wait has passed (then with an empty list).
func (r *Relay) handleResults(w http.ResponseWriter, req *http.Request) {
	clientID, ok := r.authGet(w, req)
	if !ok {
		return
	}
	q := req.URL.Query()
	cursor, err := parseCursor(q.Get("after"))
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeBadCursor, err.Error())
		return
	}
	var wait time.Duration
	if s := q.Get("wait"); s != "" {
		if wait, err = time.ParseDuration(s); err != nil || wait < 0 || wait > maxPollWait {
			writeError(w, http.StatusBadRequest, CodeBadCursor, "wait must be a duration between 0s and 60s")
			return
		}
	}
	limit := defPollLimit
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > maxPollLimit {
			writeError(w, http.StatusBadRequest, CodeBadCursor, "limit must be 1..1000")
			return
		}
	}
	cons, err := r.historyAfter(req.Context(), clientID, cursor)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, CodeNATSUnavailable, "the result history is not reachable")
		return
	}
	ans := pollAnswer{Results: []polled{}, NextCursor: cursor}
	add := func(m jetstream.Msg) {
		e, err := entryOf(m)
		if err != nil {
			return
		}
		ans.NextCursor = e.Cursor
		var d Delivery
		if e.Attested && json.Unmarshal(e.Data, &d) == nil {
			ans.Results = append(ans.Results, polled{Cursor: e.Cursor, Delivery: d})
		}
	}
	if wait >= time.Second { // the server's minimum pull expiry
		m, err := cons.Next(jetstream.FetchMaxWait(wait))
		switch {
		case err == nil:
			add(m)
		case errors.Is(err, nats.ErrTimeout), req.Context().Err() != nil:
			writeJSON(w, http.StatusOK, ans)
			return
		default:
			r.log.Warn("long poll", "client_id", clientID, "err", err)
			writeError(w, http.StatusServiceUnavailable, CodeNATSUnavailable, "the result history is not reachable")
			return
		}
	}
	if n := limit - len(ans.Results); n > 0 {
		batch, err := cons.FetchNoWait(n)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, CodeNATSUnavailable, "the result history is not reachable")
			return
		}
		for m := range batch.Messages() {
			add(m)
		}
	}
	writeJSON(w, http.StatusOK, ans)
}

package main

import (
	"errors"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/hwsigner/signer/routing/natstest"
	"github.com/hwsigner/signer/signer/config"
)

func TestRedactURLs(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://user:s3cret@nats1:4222", "nats://user:xxxxx@nats1:4222"},
		{"nats://t0ken@nats1:4222", "nats://xxxxx@nats1:4222"},
		{"tls://a:1@n1:4222, tls://n2:4222", "tls://a:xxxxx@n1:4222,tls://n2:4222"},
		{"nats://%zz@host", "(unparsable URL)"},
	} {
		if got := redactURLs(tc.in); got != tc.want {
			t.Errorf("redactURLs(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if strings.Contains(redactURLs(tc.in), "s3cret") || strings.Contains(redactURLs(tc.in), "t0ken") {
			t.Errorf("redactURLs(%q) keeps the secret", tc.in)
		}
	}
}

// TestConnectErrorsHideCredentials: a nats.url that does not parse is a
// configuration error, reported without the password it holds.
func TestConnectErrorsHideCredentials(t *testing.T) {
	for _, url := range []string{"nats://user:s3cret@host:badport", "nats://user:s3 cret@host:4222", "nats://user:s3%zzcret@host:4222"} {
		c := newNATSConn(url, slog.New(slog.DiscardHandler), nil)
		nc, err := c.connect(&config.Config{NodeID: "node0", NATS: config.NATS{URL: url}})
		if err == nil {
			nc.Close()
			t.Fatalf("%q: connected", url)
		}
		if strings.Contains(err.Error(), "s3") || !strings.Contains(err.Error(), "does not parse") {
			t.Errorf("%q: %v", url, err)
		}
	}
	c := newNATSConn("nats://host:badport", slog.New(slog.DiscardHandler), nil)
	if _, err := c.connect(&config.Config{NodeID: "node0", NATS: config.NATS{URL: "nats://host:badport"}}); err == nil || !strings.Contains(err.Error(), "badport") {
		t.Errorf("without credentials the parse error is shown: %v", err)
	}
}

// TestRunExitsWhenNATSRefusesIt: a NATS outage never ends signerd, but a
// connection that nats.go closes for good (the server refuses the node's
// credentials twice in a row) does: signerd exits 1 and says why, and
// systemd's Restart= and StartLimitBurst take over. The password is not
// logged.
func TestRunExitsWhenNATSRefusesIt(t *testing.T) {
	srv := natstest.RunServerWithOptions(t, &server.Options{Username: "signer", Password: "right-password"})
	url := strings.Replace(srv.ClientURL(), "nats://", "nats://signer:wrong-password@", 1)
	pc := newProcCluster(t, url)
	pc.dumpLogsOnFailure()
	n := pc.nodes["node0"]
	pc.start(n)
	nl := pc.collectNotes(n)
	done := make(chan error, 1)
	go func() { done <- n.cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("signerd exit: %v, want exit status 1", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("signerd still running 90 s after NATS refused its credentials")
	}
	l := logOf(t, n)
	for _, want := range []string{"NATS connection closed for good; stopping", "signerd: NATS connection closed: nats: Authorization Violation"} {
		if !strings.Contains(l, want) {
			t.Errorf("output lacks %q:\n%s", want, l)
		}
	}
	if strings.Contains(l, "wrong-password") {
		t.Errorf("the NATS password is in the output:\n%s", l)
	}
	if nl.count("STOPPING=1", time.Time{}) != 1 {
		t.Errorf("no STOPPING=1 before the exit")
	}
}

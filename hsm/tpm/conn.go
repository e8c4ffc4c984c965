package tpm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// maxResponse bounds a TPM response read from TCP (TPM responses are a few
// KiB at most).
const maxResponse = 1 << 16

// errTransport marks a failure to talk to the TPM (as opposed to a TPM
// response code): the connection is dropped and the command retried once.
var errTransport = errors.New("tpm transport")

// tcpTPM speaks raw TPM 2.0 commands over one TCP connection, as swtpm's
// --server port does. No platform (power) commands are ever sent.
type tcpTPM struct {
	c net.Conn
}

func dialTCP(ctx context.Context, addr string) (*tcpTPM, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &tcpTPM{c: c}, nil
}

func (t *tcpTPM) Send(cmd []byte) ([]byte, error) {
	if _, err := t.c.Write(cmd); err != nil {
		return nil, fmt.Errorf("%w: write: %w", errTransport, err)
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(t.c, hdr); err != nil {
		return nil, fmt.Errorf("%w: read: %w", errTransport, err)
	}
	n := binary.BigEndian.Uint32(hdr[2:6])
	if n < 10 || n > maxResponse {
		return nil, fmt.Errorf("%w: response size %d", errTransport, n)
	}
	rsp := make([]byte, n)
	copy(rsp, hdr)
	if _, err := io.ReadFull(t.c, rsp[10:]); err != nil {
		return nil, fmt.Errorf("%w: read: %w", errTransport, err)
	}
	return rsp, nil
}

func (t *tcpTPM) setDeadline(d time.Time) { _ = t.c.SetDeadline(d) }

func (t *tcpTPM) Close() error { return t.c.Close() }

// devTPM wraps a character device; errors from it are transport errors.
type devTPM struct {
	t transport.TPMCloser
}

func (d devTPM) Send(cmd []byte) ([]byte, error) {
	rsp, err := d.t.Send(cmd) // TPM response codes are parsed later, by tpm2
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errTransport, err)
	}
	return rsp, nil
}

func (d devTPM) Close() error { return d.t.Close() }

func openTransport(ctx context.Context, cfg Config) (transport.TPMCloser, error) {
	if cfg.Addr != "" {
		return dialTCP(ctx, cfg.Addr)
	}
	t, err := linuxtpm.Open(cfg.Device)
	if err != nil {
		return nil, err
	}
	return devTPM{t: t}, nil
}

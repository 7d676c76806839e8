package cardsock

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"tokenlab/apdu"
)

// Conn is a connection to a card served by another process. It implements apdu.Transactor.
//
// A request whose exchange fails part-way (a deadline, a cancelled context, a broken or
// malformed reply) closes the connection: the server may still answer it, and that answer
// must never be taken for the next request's. Every later call returns the first failure.
type Conn struct {
	mu     sync.Mutex
	c      net.Conn
	broken error
}

// Dial connects to the card socket at path.
func Dial(ctx context.Context, path string) (*Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("cardsock: %w (is tokenlab serve --card-socket running?)", err)
	}
	return &Conn{c: c}, nil
}

// Dialer returns a function that dials path, for middleware.Open.
func Dialer(path string) func(context.Context) (apdu.Transactor, error) {
	return func(ctx context.Context) (apdu.Transactor, error) { return Dial(ctx, path) }
}

// call sends one request and returns the result of a successful response.
func (k *Conn) call(ctx context.Context, op byte, arg []byte) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.broken != nil {
		return nil, fmt.Errorf("cardsock: connection closed after an earlier failure: %w", k.broken)
	}
	if dl, ok := ctx.Deadline(); ok {
		k.c.SetDeadline(dl)
		defer k.c.SetDeadline(timeZero)
	}
	stop := context.AfterFunc(ctx, func() { k.c.Close() })
	defer stop()
	if err := writeMessage(k.c, op, arg); err != nil {
		return nil, k.fail(ctx, err)
	}
	b, err := readMessage(k.c)
	if err != nil {
		return nil, k.fail(ctx, err)
	}
	switch b[0] {
	case statusOK:
		return b[1:], nil
	case statusRemoved:
		return nil, apdu.ErrRemoved
	case statusError:
		return nil, fmt.Errorf("cardsock: %s", b[1:])
	}
	return nil, k.fail(ctx, fmt.Errorf("%w: status 0x%02X", ErrMessage, b[0]))
}

// fail closes the connection, whose framing can no longer be trusted, and says why.
func (k *Conn) fail(ctx context.Context, err error) error {
	k.c.Close()
	switch {
	case ctx.Err() != nil:
		err = ctx.Err()
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The socket's deadline, which is ctx's, fired before ctx's own timer.
		err = context.DeadlineExceeded
	default:
		err = fmt.Errorf("cardsock: %w", err)
	}
	k.broken = err
	return err
}

// Transmit implements apdu.Transport.
func (k *Conn) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	return k.call(ctx, opTransmit, cmd)
}

// Begin implements apdu.Transactor.
func (k *Conn) Begin(ctx context.Context) error {
	_, err := k.call(ctx, opBegin, nil)
	return err
}

// End implements apdu.Transactor.
func (k *Conn) End(d apdu.Disposition) error {
	_, err := k.call(context.Background(), opEnd, []byte{byte(d)})
	return err
}

// Status reports whether the card is present and how often it was removed.
func (k *Conn) Status(ctx context.Context) (present bool, removals uint64, err error) {
	b, err := k.call(ctx, opStatus, nil)
	if err != nil {
		return false, 0, err
	}
	if len(b) != 9 {
		return false, 0, fmt.Errorf("%w: status of %d bytes", ErrMessage, len(b))
	}
	return b[0] == 1, binary.BigEndian.Uint64(b[1:]), nil
}

// WaitChange waits until the card's presence or removal count differs from the ones given,
// and returns the new ones.
func (k *Conn) WaitChange(ctx context.Context, present bool, removals uint64) (bool, uint64, error) {
	arg := []byte{0}
	if present {
		arg[0] = 1
	}
	b, err := k.call(ctx, opWait, binary.BigEndian.AppendUint64(arg, removals))
	if err != nil {
		return false, 0, err
	}
	if len(b) != 9 {
		return false, 0, fmt.Errorf("%w: status of %d bytes", ErrMessage, len(b))
	}
	return b[0] == 1, binary.BigEndian.Uint64(b[1:]), nil
}

// Close implements apdu.Transactor.
func (k *Conn) Close() error { return k.c.Close() }

var _ apdu.Transactor = (*Conn)(nil)

var timeZero time.Time

package emulator

import (
	"context"
	"errors"

	"tokenlab/apdu"
)

// ErrRemoved is apdu.ErrRemoved: the card is absent, or was removed since the connection was made.
var ErrRemoved = apdu.ErrRemoved

// Conn is one host's connection to the card, as SCardConnect gives one. It implements
// apdu.Transactor.
type Conn struct {
	c   *Card
	gen uint64
}

// Connect returns a new connection to the card. It does not fail when the card is absent; the
// first command does.
func (c *Card) Connect() *Conn {
	c.state.Lock()
	defer c.state.Unlock()
	return &Conn{c: c, gen: c.gen}
}

// Transmit processes one command APDU for a host without a connection of its own (a reader such
// as vpcd). It waits while a connection holds a transaction.
func (c *Card) Transmit(ctx context.Context, command []byte) ([]byte, error) {
	return c.transmit(ctx, nil, command)
}

// Transmit sends one command APDU. Outside a transaction it waits while another connection
// holds one.
func (k *Conn) Transmit(ctx context.Context, command []byte) ([]byte, error) {
	return k.c.transmit(ctx, k, command)
}

func (c *Card) transmit(ctx context.Context, k *Conn, command []byte) ([]byte, error) {
	if k == nil || !c.holds(k) {
		select {
		case c.tx <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		defer func() { <-c.tx }()
	}
	return c.process(ctx, k, command)
}

// ReaderReset is a reset, power-on or power-off that the reader applies for its host, as pcscd
// does through vpcd. Like that host's commands it waits while a connection holds a transaction,
// so it never lands in the middle of another host's; if ctx ends first it returns ctx's error
// and leaves the card as it was. PowerOn, PowerOff and Reset, by contrast, act at once, as a
// power cut does.
func (c *Card) ReaderReset(ctx context.Context) error {
	select {
	case c.tx <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.tx }()
	c.reset()
	return nil
}

// check reports whether the card is present for connection k (nil: any host).
func (c *Card) check(k *Conn) error {
	c.state.Lock()
	defer c.state.Unlock()
	if !c.present || k != nil && k.gen != c.gen {
		return ErrRemoved
	}
	return nil
}

func (c *Card) holds(k *Conn) bool {
	c.state.Lock()
	defer c.state.Unlock()
	return c.owner == k
}

// Begin starts a transaction: until End, no other host's command reaches the card. It waits for
// another connection's transaction to end.
func (k *Conn) Begin(ctx context.Context) error {
	c := k.c
	if c.holds(k) {
		return errors.New("emulator: transaction already started on this connection")
	}
	select {
	case c.tx <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := c.claim(k); err != nil {
		<-c.tx
		return err
	}
	if c.afterBegin != nil {
		c.afterBegin()
	}
	return nil
}

// claim makes k the owner of the transaction token the caller took, if the card is present for
// k. The check and the claim are one step: a removal between them would leave a stale
// connection holding the card, and every other host waiting for it.
func (c *Card) claim(k *Conn) error {
	c.state.Lock()
	defer c.state.Unlock()
	if !c.present || k.gen != c.gen {
		return ErrRemoved
	}
	c.owner = k
	return nil
}

// End ends the connection's transaction, leaving or resetting the card. Without a transaction
// it does nothing.
func (k *Conn) End(d apdu.Disposition) error {
	c := k.c
	c.state.Lock()
	if c.owner != k {
		c.state.Unlock()
		return nil
	}
	c.owner = nil
	c.state.Unlock()
	if d == apdu.ResetCard {
		c.reset()
	}
	<-c.tx
	return nil
}

// Close ends the connection's transaction, if any, leaving the card as it is.
func (k *Conn) Close() error { return k.End(apdu.LeaveCard) }

// Present reports whether the card is in its reader.
func (c *Card) Present() bool {
	c.state.Lock()
	defer c.state.Unlock()
	return c.present
}

// Removals returns how many times the card has been removed; with Present, a host can tell a
// re-inserted card from one that never left.
func (c *Card) Removals() uint64 {
	c.state.Lock()
	defer c.state.Unlock()
	return c.gen
}

// Changed returns a channel that is closed at the card's next removal or insertion.
func (c *Card) Changed() <-chan struct{} {
	c.state.Lock()
	defer c.state.Unlock()
	return c.changed
}

// Remove takes the card out of its reader: power and all volatile state are gone, every
// connection is stale, and a transaction in progress is broken.
func (c *Card) Remove() {
	c.state.Lock()
	if !c.present {
		c.state.Unlock()
		return
	}
	c.present = false
	c.gen++
	broken := c.owner != nil
	c.owner = nil
	close(c.changed)
	c.changed = make(chan struct{})
	c.state.Unlock()
	if broken {
		<-c.tx // the owner's End will find it no longer owns the transaction
	}
	c.reset()
}

// Insert puts the card back: powered, with no application selected.
func (c *Card) Insert() {
	c.state.Lock()
	if c.present {
		c.state.Unlock()
		return
	}
	c.present = true
	close(c.changed)
	c.changed = make(chan struct{})
	c.state.Unlock()
	c.reset()
}

var _ apdu.Transactor = (*Conn)(nil)

// Dial returns a new connection; it lets a Card serve as a middleware's dialer.
func (c *Card) Dial(context.Context) (apdu.Transactor, error) { return c.Connect(), nil }

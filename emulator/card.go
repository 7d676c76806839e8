// Package emulator is the runtime of a virtual smart card: ATR, power and reset, applet
// selection, and command and response chaining (ISO/IEC 7816-4), under which applets run.
package emulator

import (
	"bytes"
	"context"
	"sync"

	"tokenlab/apdu"
)

// Applet is an application on the card, reached by SELECT with (a prefix of) its AID.
type Applet interface {
	// AID returns the applet's full application identifier.
	AID() []byte
	// Select makes the applet current. reselect is true when it already was, in which case the
	// applet keeps its security status (SP 800-73-4 Pt 2 §3.1.1). It appends the SELECT
	// response data (FCI or application property template) to rsp.
	Select(reselect bool, rsp []byte) ([]byte, apdu.StatusWord)
	// Deselect drops all volatile security status: another applet was selected, or the card
	// was reset, powered off or removed.
	Deselect()
	// Process handles one complete command, chains already joined. It appends the response
	// data to rsp and returns it with the status word.
	Process(ctx context.Context, cmd *apdu.Command, rsp []byte) ([]byte, apdu.StatusWord)
	// Bypassed tells the selected applet that the runtime answered a complete command itself
	// (malformed, of a foreign class, a failed SELECT): state that is valid for the next command
	// only, such as a PIN verified for a PIN-always key, must expire as if the applet had seen it.
	Bypassed()
}

// Resetter is implemented by an applet whose volatile state outlives its deselection but not a
// reset of the card, such as a YubiKey's cached touch: the runtime calls CardReset at every
// reset, power-on, power-off and removal, whether the applet is selected or not.
type Resetter interface {
	CardReset()
}

// Limits of the runtime.
const (
	// MinSelectAID is the shortest AID prefix SELECT accepts (a registered application provider id).
	MinSelectAID = 5
	// MaxChainData bounds the data a command chain may accumulate.
	MaxChainData = apdu.MaxExtendedLc
	// maxResponseData is the most one response can carry through vpcd: a 65535-byte frame
	// holding data and the two status bytes.
	maxResponseData = 0xFFFF - 2
	// chunk is the response data limit of a short response, and of a response to a command that
	// has no Le (the YubiKey sends 256 bytes and 61xx).
	chunk = 256
	// scratchSize holds the largest data object (3 KiB) and an RSA-4096 result without growing.
	scratchSize = 4096
)

// Card is a virtual card: an ATR and its applets. It is safe for concurrent use; commands are
// processed one at a time, as a card does, and a connection can hold the card for a sequence of
// commands (Conn.Begin), as PC/SC's SCardBeginTransaction does.
type Card struct {
	mu       sync.Mutex
	atr      []byte
	applets  []Applet
	selected Applet

	chaining  bool
	chainHdr  [4]byte // CLA without the chaining bit, INS, P1, P2
	chainData []byte

	pending   []byte // response data waiting for GET RESPONSE
	pendingSW apdu.StatusWord

	// buf is the scratch applets append their response data to; every response is copied out
	// of it, so applets must append to the slice they are given and never return their own.
	buf []byte
	cmd apdu.Command

	// Connections, transactions and presence (conn.go).
	tx      chan struct{} // the transaction token: held for one command, or for a transaction
	state   sync.Mutex    // guards the fields below
	owner   *Conn         // the connection holding a transaction, if any
	present bool
	gen     uint64        // removals so far; a connection made before a removal is stale
	changed chan struct{} // closed at the next removal or insertion

	afterBegin func() // tests: runs when Begin has taken the card
}

// New returns a powered card, present in its reader, with the given ATR and applets. No applet
// is selected.
func New(atr []byte, applets ...Applet) *Card {
	return &Card{
		atr:     bytes.Clone(atr),
		applets: applets,
		buf:     make([]byte, 0, scratchSize),
		tx:      make(chan struct{}, 1),
		present: true,
		changed: make(chan struct{}),
	}
}

// ATR returns the answer to reset.
func (c *Card) ATR() []byte { return bytes.Clone(c.atr) }

// Exclusive runs f between commands, for a consistent look at applet state while hosts use the
// card.
func (c *Card) Exclusive(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f()
}

// PowerOn applies power: a cold reset. Volatile state starts empty.
func (c *Card) PowerOn() { c.reset() }

// PowerOff removes power, dropping all volatile state.
func (c *Card) PowerOff() { c.reset() }

// Reset is a warm reset: volatile state (selection, security status, chains) is dropped.
func (c *Card) Reset() { c.reset() }

func (c *Card) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.selected != nil {
		c.selected.Deselect()
		c.selected = nil
	}
	for _, a := range c.applets {
		if r, ok := a.(Resetter); ok {
			r.CardReset()
		}
	}
	c.chaining, c.chainData = false, nil
	c.pending = nil
}

// process handles one command APDU of connection k (nil: the reader's own host); a malformed
// APDU is answered 6700, never an error. The caller holds the transaction token (see conn.go).
// Presence is checked under the card's lock: a removal either comes after the command or
// refuses it, never runs through it.
func (c *Card) process(ctx context.Context, k *Conn, command []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.check(k); err != nil {
		return nil, err
	}
	return c.processLocked(ctx, command), nil
}

func (c *Card) processLocked(ctx context.Context, command []byte) []byte {
	// The command lives in the card, not on the stack: passed to an applet through an
	// interface it would escape, one allocation per APDU on the signing path.
	var err error
	c.cmd, err = apdu.ParseCommand(command)
	cmd := &c.cmd
	if err != nil {
		c.bypass()
		return status(apdu.SWWrongLength)
	}
	if cmd.CLA&^apdu.ClassChaining != 0 {
		c.bypass()
		if cmd.CLA&0x0C != 0 && cmd.CLA&0x80 == 0 {
			return status(apdu.SWSecureMessagingNotSupported)
		}
		return status(apdu.SWClassNotSupported)
	}
	if cmd.INS == apdu.InsGetResponse && c.pending != nil {
		return c.getResponse(cmd)
	}
	c.pending = nil

	if c.chaining && (cmd.INS != c.chainHdr[1] || cmd.P1 != c.chainHdr[2] || cmd.P2 != c.chainHdr[3]) {
		// A different command abandons the chain, which then counts as a command of its own.
		c.bypass()
	}
	if cmd.IsChained() {
		if cmd.INS == apdu.InsSelect || cmd.INS == apdu.InsGetResponse {
			c.bypass()
			return status(apdu.SWChainingNotSupported)
		}
		if len(c.chainData)+len(cmd.Data) > MaxChainData {
			c.bypass()
			return status(apdu.SWWrongLength)
		}
		if !c.chaining {
			c.chaining = true
			c.chainHdr = [4]byte{0, cmd.INS, cmd.P1, cmd.P2}
			c.chainData = c.chainData[:0]
		}
		c.chainData = append(c.chainData, cmd.Data...)
		return status(apdu.SWSuccess)
	}
	if c.chaining {
		if len(c.chainData)+len(cmd.Data) > MaxChainData {
			c.bypass()
			return status(apdu.SWWrongLength)
		}
		cmd.Data = append(c.chainData, cmd.Data...)
		c.chaining, c.chainData = false, nil
	}

	var data []byte
	var sw apdu.StatusWord
	if cmd.INS == apdu.InsSelect {
		data, sw = c.selectApplet(cmd)
	} else if c.selected == nil {
		sw = apdu.SWNotFound
	} else {
		data, sw = c.selected.Process(ctx, cmd, c.buf[:0])
	}
	return c.respond(cmd, data, sw)
}

// selectApplet implements SELECT by DF name (P1 04) with right-truncated AIDs of at least five
// bytes. There is no file system: every other form is "not found".
func (c *Card) selectApplet(cmd *apdu.Command) ([]byte, apdu.StatusWord) {
	if cmd.P1 != 0x04 {
		c.bypass()
		return nil, apdu.SWNotFound
	}
	if cmd.P2&^0x0C != 0 { // first occurrence only, returning FCI (00), FCP (04) or nothing (0C)
		c.bypass()
		return nil, apdu.SWIncorrectP1P2
	}
	var next Applet
	if len(cmd.Data) >= MinSelectAID {
		for _, a := range c.applets {
			if bytes.HasPrefix(a.AID(), cmd.Data) {
				next = a
				break
			}
		}
	}
	if next == nil {
		// ISO 7816-4: a failed SELECT leaves the current application selected.
		c.bypass()
		return nil, apdu.SWNotFound
	}
	reselect := next == c.selected
	if !reselect && c.selected != nil {
		c.selected.Deselect()
	}
	c.selected = next
	data, sw := next.Select(reselect, c.buf[:0])
	if cmd.P2 == 0x0C {
		data = nil
	}
	return data, sw
}

// respond limits the response to what the command allows and keeps the rest for GET RESPONSE.
func (c *Card) respond(cmd *apdu.Command, data []byte, sw apdu.StatusWord) []byte {
	limit := responseLimit(cmd)
	if len(data) <= limit {
		return appendSW(make([]byte, 0, len(data)+2), data, sw)
	}
	c.pending = append(c.pending[:0], data[limit:]...)
	c.pendingSW = sw
	return appendSW(make([]byte, 0, limit+2), data[:limit], remaining(len(c.pending)))
}

func (c *Card) getResponse(cmd *apdu.Command) []byte {
	if cmd.P1 != 0 || cmd.P2 != 0 {
		c.bypass()
		return status(apdu.SWIncorrectP1P2)
	}
	n := min(responseLimit(cmd), len(c.pending))
	out := make([]byte, 0, n+2)
	out = append(out, c.pending[:n]...)
	c.pending = c.pending[n:]
	if len(c.pending) > 0 {
		return appendSW(out, nil, remaining(len(c.pending)))
	}
	sw := c.pendingSW
	c.pending = nil
	return appendSW(out, nil, sw)
}

// responseLimit is how much response data cmd may receive at once: its Ne, at most 256 bytes
// in a short APDU or without Le, at most what vpcd can carry in an extended one.
func responseLimit(cmd *apdu.Command) int {
	switch {
	case cmd.Extended && cmd.Ne > chunk:
		return min(cmd.Ne, maxResponseData)
	case cmd.Ne > 0:
		return min(cmd.Ne, chunk)
	}
	return chunk
}

// bypass abandons pending responses and chains, and tells the selected applet that a command
// went past it.
func (c *Card) bypass() {
	c.pending = nil
	c.chaining, c.chainData = false, nil
	if c.selected != nil {
		c.selected.Bypassed()
	}
}

// remaining returns 61xx, with xx = 00 meaning 256 or more.
func remaining(n int) apdu.StatusWord {
	return apdu.SWBytesRemaining | apdu.StatusWord(min(n, chunk)&0xFF)
}

func appendSW(dst, data []byte, sw apdu.StatusWord) []byte {
	dst = append(dst, data...)
	return append(dst, sw.SW1(), sw.SW2())
}

func status(sw apdu.StatusWord) []byte { return []byte{sw.SW1(), sw.SW2()} }

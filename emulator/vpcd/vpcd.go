// Package vpcd plugs a virtual card into pcscd through vsmartcard's vpcd reader driver: it
// connects to the driver's TCP port, answers its control and APDU messages, and reconnects when
// pcscd restarts. To pcscd the connection is the card: connecting inserts it, closing removes it.
package vpcd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"tokenlab/apdu"
	"tokenlab/apdu/vpcd"
)

// DefaultAddr is where pcscd's vpcd driver listens for its first reader slot.
var DefaultAddr = fmt.Sprintf("127.0.0.1:%d", vpcd.DefaultPort)

// Card is what a reader needs of a card.
type Card interface {
	ATR() []byte
	// ReaderReset applies the reader's power-off, power-on or reset. Like Transmit, it waits
	// while another host holds a transaction on the card.
	ReaderReset(ctx context.Context) error
	Transmit(ctx context.Context, command []byte) ([]byte, error)
}

// Presence is what a Link needs of a card that can leave its reader, as *emulator.Card can: the
// link then closes the vpcd connection while the card is out, so that pcscd sees the removal
// as from a physical reader, and connects again at insertion.
type Presence interface {
	Present() bool
	// Changed returns a channel closed at the card's next removal or insertion.
	Changed() <-chan struct{}
}

// Link keeps a card plugged into a vpcd reader. A Card that also implements Presence is
// unplugged while it is out of its reader.
type Link struct {
	Addr string // host:port of the vpcd driver; empty means DefaultAddr
	Card Card
	Log  *slog.Logger // nil discards
	// Inserted and Removed, when set, are called as the card enters and leaves the reader.
	Inserted, Removed func()
}

// Backoff bounds for reconnecting; pcscd is usually back within half a second of a restart.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// Run connects to the reader and serves the card until ctx ends, reconnecting with backoff
// whenever the connection fails or closes. It returns ctx's error.
func (l *Link) Run(ctx context.Context) error {
	addr := l.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	log := l.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	backoff := minBackoff
	waiting := false
	for {
		if err := l.waitPresent(ctx, log); err != nil {
			return err
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			if waiting {
				log.Info("vpcd reader is back", "addr", addr)
			}
			waiting = false
			backoff = minBackoff
			log.Info("card inserted into vpcd reader", "addr", addr)
			if l.Inserted != nil {
				l.Inserted()
			}
			unwatch := l.closeAtRemoval(conn)
			err = Serve(ctx, conn, l.Card, log)
			pulled := unwatch()
			conn.Close()
			// Out of the reader, out of power; a transaction of another host finishes first.
			l.Card.ReaderReset(ctx)
			if pulled {
				err = errors.New("the card was removed")
			}
			if l.Removed != nil {
				l.Removed()
			}
			log.Info("card removed from vpcd reader", "addr", addr, "reason", err)
			if pulled && ctx.Err() == nil {
				continue // back in as soon as it is inserted
			}
		} else if !waiting {
			log.Info("waiting for the vpcd reader (is pcscd running with vsmartcard-vpcd?)", "addr", addr, "err", err)
			waiting = true
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// waitPresent returns when the card is in its reader (at once for a card without Presence),
// or with ctx's error.
func (l *Link) waitPresent(ctx context.Context, log *slog.Logger) error {
	p, ok := l.Card.(Presence)
	if !ok {
		return nil
	}
	for logged := false; ; logged = true {
		ch := p.Changed()
		if p.Present() {
			return nil
		}
		if !logged {
			log.Info("the card is out of its reader: the vpcd reader stays empty until it is inserted")
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// closeAtRemoval closes conn when the card leaves its reader. The returned function ends the
// watch and reports whether the removal closed conn.
func (l *Link) closeAtRemoval(conn net.Conn) func() bool {
	p, ok := l.Card.(Presence)
	if !ok {
		return func() bool { return false }
	}
	stop := make(chan struct{})
	pulled := make(chan bool, 1)
	go func() {
		for {
			ch := p.Changed()
			if !p.Present() {
				conn.Close()
				pulled <- true
				return
			}
			select {
			case <-ch:
			case <-stop:
				pulled <- false
				return
			}
		}
	}()
	return func() bool {
		close(stop)
		return <-pulled
	}
}

// Serve answers the reader on one connection until it closes, fails, sends something
// malformed, or ctx ends. It returns why it stopped.
func Serve(ctx context.Context, conn net.Conn, card Card, log *slog.Logger) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var raw syscall.RawConn
	if tc, ok := conn.(*net.TCPConn); ok {
		raw, _ = tc.SyscallConn()
	}
	debug := log.Enabled(ctx, slog.LevelDebug)
	buf := make([]byte, 0, 512)
	out := make([]byte, 0, 512)
	for {
		quickAck(raw)
		frame, err := vpcd.ReadFrame(conn, buf)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return errors.New("reader closed the connection")
			}
			return err
		}
		buf = frame[:0]
		msg, err := vpcd.ParseMessage(frame)
		if err != nil {
			return err
		}
		var reply []byte
		if msg.IsControl {
			if debug {
				log.Debug("vpcd control", "op", msg.Control.String())
			}
			switch msg.Control {
			case vpcd.PowerOff, vpcd.PowerOn, vpcd.Reset:
				if err := card.ReaderReset(ctx); err != nil {
					return err
				}
			case vpcd.GetATR:
				reply = card.ATR()
			}
			if reply == nil {
				continue // power and reset get no answer
			}
		} else {
			reply, err = card.Transmit(ctx, msg.APDU)
			if err != nil {
				return err
			}
			if debug {
				logAPDU(ctx, log, msg.APDU, reply)
			}
		}
		// One write for header and payload: a lone header would wait for the peer's delayed ACK.
		if out, err = vpcd.AppendFrame(out[:0], reply); err != nil {
			return err
		}
		if _, err := conn.Write(out); err != nil {
			return err
		}
	}
}

// logAPDU logs the header, the lengths and the status word of an exchange, never the data:
// command data carries PINs, PUKs, imported private keys and management keys, and responses
// carry shared secrets and decryptions.
func logAPDU(ctx context.Context, log *slog.Logger, cmd, rsp []byte) {
	attrs := []slog.Attr{slog.Int("len", len(cmd))}
	if c, err := apdu.ParseCommand(cmd); err == nil {
		attrs = append(attrs,
			slog.String("header", fmt.Sprintf("%02X %02X %02X %02X", c.CLA, c.INS, c.P1, c.P2)),
			slog.Int("lc", len(c.Data)), slog.Int("ne", c.Ne))
	}
	if r, err := apdu.ParseResponse(rsp); err == nil {
		attrs = append(attrs, slog.Int("data", len(r.Data)), slog.String("sw", fmt.Sprintf("%04X", uint16(r.SW))))
	}
	log.LogAttrs(ctx, slog.LevelDebug, "apdu", attrs...)
}

// quickAck re-arms TCP_QUICKACK before each read. vpcd 0.8 sends a message's length and payload
// in two writes; with Nagle on its side and delayed ACK on ours every message stalls about 44 ms.
// The option is not sticky, hence every time.
func quickAck(raw syscall.RawConn) {
	if raw == nil {
		return
	}
	raw.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
	})
}

package vpcd

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tokenlab/apdu"
	"tokenlab/apdu/vpcd"
	"tokenlab/emulator/yubikey"
)

// reader plays pcscd's vpcd driver: it listens, and talks to the card that connects.
type reader struct {
	t    *testing.T
	ln   net.Listener
	conn net.Conn
}

func listen(t *testing.T) *reader {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &reader{t: t, ln: ln}
}

func (r *reader) accept() {
	r.t.Helper()
	r.ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c, err := r.ln.Accept()
	if err != nil {
		r.t.Fatal(err)
	}
	r.conn = c
}

func (r *reader) send(payload ...byte) {
	r.t.Helper()
	// Length and payload in two writes, as vpcd 0.8 does.
	if _, err := r.conn.Write([]byte{byte(len(payload) >> 8), byte(len(payload))}); err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.conn.Write(payload); err != nil {
		r.t.Fatal(err)
	}
}

func (r *reader) recv() []byte {
	r.t.Helper()
	r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := vpcd.ReadFrame(r.conn, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	return f
}

func TestLink(t *testing.T) {
	d, err := yubikey.New(yubikey.Options{Serial: 5})
	if err != nil {
		t.Fatal(err)
	}
	r := listen(t)
	var inserted, removed atomic.Int32
	link := &Link{Addr: r.ln.Addr().String(), Card: d.Card,
		Inserted: func() { inserted.Add(1) }, Removed: func() { removed.Add(1) }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- link.Run(ctx) }()

	r.accept()
	r.send(byte(vpcd.GetATR))
	if atr := r.recv(); !bytes.Equal(atr, yubikey.ATR) {
		t.Errorf("ATR % X", atr)
	}
	r.send(byte(vpcd.PowerOn)) // no answer; the next frame answers the APDU
	r.send(0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08)
	if rsp := r.recv(); !bytes.HasSuffix(rsp, []byte{0x90, 0x00}) || rsp[0] != 0x61 {
		t.Errorf("SELECT answered % X", rsp)
	}
	r.send(0x00, 0xF8, 0x00, 0x00, 0x00)
	if rsp := r.recv(); !bytes.Equal(rsp, []byte{0, 0, 0, 5, 0x90, 0x00}) {
		t.Errorf("GET SERIAL answered % X", rsp)
	}

	// pcscd restarts: the connection drops (the card is removed) and the card comes back.
	r.conn.Close()
	r.accept()
	r.send(byte(vpcd.GetATR))
	r.recv()
	if inserted.Load() != 2 || removed.Load() != 1 {
		t.Errorf("inserted %d, removed %d times; want 2 and 1", inserted.Load(), removed.Load())
	}
	// A reader that sends garbage is dropped, not obeyed.
	r.send(0x03)
	r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.conn.Read(make([]byte, 1)); err == nil {
		t.Error("card kept talking after an unknown control code")
	}
	r.accept()

	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop when its context ended")
	}
}

// A card removed from its reader leaves the vpcd reader at once (the connection closes, which
// pcscd sees as a removal), stays out while it is out, and is plugged in again at insertion.
func TestLinkFollowsRemoval(t *testing.T) {
	d, err := yubikey.New(yubikey.Options{Serial: 6})
	if err != nil {
		t.Fatal(err)
	}
	r := listen(t)
	var removed atomic.Int32
	link := &Link{Addr: r.ln.Addr().String(), Card: d.Card, Removed: func() { removed.Add(1) }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- link.Run(ctx) }()
	defer func() { cancel(); <-done }()

	r.accept()
	r.send(byte(vpcd.GetATR))
	r.recv()
	start := time.Now()
	d.Card.Remove()
	r.conn.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := r.conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("the reader got data from a removed card")
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the vpcd connection stayed open for a second after the removal")
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("the connection closed %v after the removal", d)
	}
	// No reconnection while the card is out: the reader would see a card that answers nothing.
	r.ln.(*net.TCPListener).SetDeadline(time.Now().Add(700 * time.Millisecond))
	if c, err := r.ln.Accept(); err == nil {
		c.Close()
		t.Fatal("the link plugged an absent card into the reader")
	}
	if removed.Load() != 1 {
		t.Errorf("Removed called %d times, want 1", removed.Load())
	}
	d.Card.Insert()
	r.accept()
	r.send(byte(vpcd.GetATR))
	if atr := r.recv(); !bytes.Equal(atr, yubikey.ATR) {
		t.Errorf("ATR after insertion % X", atr)
	}
}

func TestLinkWaitsForReader(t *testing.T) {
	d, _ := yubikey.New(yubikey.Options{})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close() // nobody listens yet: pcscd is not running
	link := &Link{Addr: addr, Card: d.Card}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go link.Run(ctx)
	time.Sleep(300 * time.Millisecond)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port %s taken by someone else meanwhile: %v", addr, err)
	}
	defer ln.Close()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("card did not connect once the reader appeared: %v", err)
	}
	c.Close()
}

// With -v the link logs every APDU, but never its data: VERIFY carries the PIN.
func TestLogRedactsData(t *testing.T) {
	d, _ := yubikey.New(yubikey.Options{})
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { (&Link{Addr: r.ln.Addr().String(), Card: d.Card, Log: log}).Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	r.accept()
	r.send(0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08)
	r.recv()
	r.send(0x00, 0x20, 0x00, 0x80, 0x08, '1', '2', '3', '4', '5', '6', 0xFF, 0xFF)
	if rsp := r.recv(); !bytes.Equal(rsp, []byte{0x90, 0x00}) {
		t.Fatalf("VERIFY answered % X", rsp)
	}
	cancel()
	<-done // the link logs until Run returns
	out := buf.String()
	for _, secret := range []string{"31 32 33", "313233", "123456"} {
		if strings.Contains(out, secret) {
			t.Errorf("the log shows the PIN (%q):\n%s", secret, out)
		}
	}
	if !strings.Contains(out, `header="00 20 00 80"`) || !strings.Contains(out, "sw=9000") {
		t.Errorf("the log lacks the VERIFY header and status:\n%s", out)
	}
}

// pcscd's reset reaches the card through vpcd while a host of the card socket holds a
// transaction: it waits for the transaction to end instead of logging that host out.
func TestResetWaitsForTransaction(t *testing.T) {
	d, _ := yubikey.New(yubikey.Options{})
	r := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { (&Link{Addr: r.ln.Addr().String(), Card: d.Card}).Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	r.accept()

	k := d.Card.Connect()
	if err := k.Begin(ctx); err != nil {
		t.Fatal(err)
	}
	selectPIV := []byte{0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08}
	verified := []byte{0x00, 0x20, 0x00, 0x80}
	k.Transmit(ctx, selectPIV)
	if rsp, _ := k.Transmit(ctx, []byte{0x00, 0x20, 0x00, 0x80, 0x08, '1', '2', '3', '4', '5', '6', 0xFF, 0xFF}); !bytes.Equal(rsp, []byte{0x90, 0x00}) {
		t.Fatalf("VERIFY answered % X", rsp)
	}
	r.send(byte(vpcd.Reset))
	time.Sleep(50 * time.Millisecond)
	if rsp, _ := k.Transmit(ctx, verified); !bytes.Equal(rsp, []byte{0x90, 0x00}) {
		t.Errorf("inside the transaction, after pcscd's reset, the PIN status is % X, want 90 00", rsp)
	}
	k.End(apdu.LeaveCard)
	// The reset applies now: the reader's host finds the PIN no longer verified.
	r.send(selectPIV...)
	r.recv()
	r.send(verified...)
	if rsp := r.recv(); !bytes.Equal(rsp, []byte{0x63, 0xC3}) {
		t.Errorf("after the transaction the PIN status is % X, want 63 C3 (the reset applied)", rsp)
	}
}

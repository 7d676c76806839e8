package cardsock

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"tokenlab/apdu"
	"tokenlab/emulator/yubikey"
	"tokenlab/internal/unixsock"
	"tokenlab/middleware/pivclient"
)

func serve(t *testing.T) (*yubikey.Device, string) {
	t.Helper()
	d, err := yubikey.New(yubikey.Options{Serial: 99})
	if err != nil {
		t.Fatal(err)
	}
	return d, serveCard(t, d.Card)
}

// serveCard serves card on a new socket until the test ends, and returns the socket's path.
func serveCard(t *testing.T, card Card) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "card.sock")
	ln, err := unixsock.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { (&Server{Card: card}).Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return path
}

func TestTransmitAcrossProcesses(t *testing.T) {
	_, path := serve(t)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	ctx := context.Background()
	k, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	c := pivclient.New(k)
	if _, err := c.Select(ctx); err != nil {
		t.Fatal(err)
	}
	if s, err := c.Serial(ctx); err != nil || s != 99 {
		t.Errorf("serial %d %v", s, err)
	}
	present, removals, err := k.Status(ctx)
	if err != nil || !present || removals != 0 {
		t.Errorf("status %v %d %v", present, removals, err)
	}
}

func TestTransactionsAndRemoval(t *testing.T) {
	d, path := serve(t)
	ctx := context.Background()
	a, _ := Dial(ctx, path)
	b, _ := Dial(ctx, path)
	defer a.Close()
	defer b.Close()
	if err := a.Begin(ctx); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := b.Transmit(short, []byte{0x00, 0xA4, 0x04, 0x00}); err == nil {
		t.Error("another connection's APDU ran inside a transaction")
	}
	a.End(apdu.LeaveCard)
	b, _ = Dial(ctx, path) // the timed-out connection was closed
	if _, err := b.Transmit(ctx, []byte{0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08}); err != nil {
		t.Errorf("after End: %v", err)
	}
	d.Card.Remove()
	if _, err := b.Transmit(ctx, []byte{0x00, 0xFD, 0x00, 0x00}); !errors.Is(err, apdu.ErrRemoved) {
		t.Errorf("after removal: %v", err)
	}
	if present, removals, _ := b.Status(ctx); present || removals != 1 {
		t.Errorf("status after removal: %v %d", present, removals)
	}
}

// A malformed message gets an error and closes that connection only.
func TestMalformedClosesOneConnection(t *testing.T) {
	_, path := serve(t)
	ctx := context.Background()
	good, _ := Dial(ctx, path)
	defer good.Close()
	raw, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.Write([]byte{0, 0, 0, 2, 'Q', 0})
	b, err := readMessage(raw)
	if err != nil || b[0] != statusError || !bytes.Contains(b, []byte("operation 0x51")) {
		t.Errorf("reply to an unknown operation: %q %v", b, err)
	}
	raw.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := raw.Read(make([]byte, 1)); err == nil {
		t.Error("connection stayed open")
	}
	var huge [4]byte
	binary.BigEndian.PutUint32(huge[:], MaxMessage+1)
	raw2, _ := net.Dial("unix", path)
	raw2.Write(huge[:])
	raw2.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := raw2.Read(make([]byte, 1)); err == nil {
		t.Error("oversized message did not close the connection")
	}
	if _, _, err := good.Status(ctx); err != nil {
		t.Errorf("the other connection suffered: %v", err)
	}
	if _, err := unixsock.Listen(path); err == nil {
		t.Error("listened on a socket another server answers")
	}
}

func FuzzRequest(f *testing.F) {
	f.Add([]byte{0, 0, 0, 11, 'T', 0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08})
	f.Add([]byte{0, 0, 0, 1, 'B', 0, 0, 0, 2, 'E', 1, 0, 0, 0, 1, 'S'})
	f.Add([]byte{0, 0, 0, 10, 'W', 1, 0, 0, 0, 0, 0, 0, 0, 3})
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := bytes.NewReader(stream)
		for {
			b, err := readMessage(r)
			if err != nil {
				return
			}
			req, err := parseRequest(b)
			if err != nil {
				continue
			}
			var w bytes.Buffer
			if err := writeMessage(&w, req.op, req.arg); err != nil {
				t.Fatal(err)
			}
			back, err := readMessage(&w)
			if err != nil || !bytes.Equal(back, b) {
				t.Fatalf("round trip % X -> % X", b, back)
			}
		}
	})
}

// slowServer answers every request with status 0 and the request's argument, 30 ms late.
func slowServer(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "slow.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					b, err := readMessage(c)
					if err != nil {
						return
					}
					time.Sleep(30 * time.Millisecond)
					if writeMessage(c, statusOK, b[1:]) != nil {
						return
					}
				}
			}()
		}
	}()
	return path
}

// A request that times out leaves its answer on the way; the connection must not take it for
// the answer to the next request.
func TestTimeoutClosesConnection(t *testing.T) {
	path := slowServer(t)
	for i := range 20 {
		k, err := Dial(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		_, err1 := k.Transmit(ctx, []byte{0x00, 0x20, 0x00, 0x80, 0x01})
		cancel()
		if err1 == nil {
			t.Fatalf("#%d: a 10 ms deadline on a 30 ms server did not expire", i)
		}
		second := []byte{0x00, 0x87, 0x11, 0x9C, 0x02}
		out, err2 := k.Transmit(context.Background(), second)
		k.Close()
		if err2 == nil {
			t.Fatalf("#%d: the connection was used again after a timeout and answered % X (to % X)", i, out, second)
		}
		if !errors.Is(err2, context.DeadlineExceeded) {
			t.Errorf("#%d: the next call failed with %v; want it to name the earlier timeout", i, err2)
		}
	}
}

// waitingCard is a card whose Begin waits, as behind another host's transaction, until the
// request's context ends, and reports that end.
type waitingCard struct{ abandoned chan error }

func (w *waitingCard) Dial(context.Context) (apdu.Transactor, error) { return w, nil }
func (w *waitingCard) Present() bool                                 { return true }
func (w *waitingCard) Removals() uint64                              { return 0 }
func (w *waitingCard) Changed() <-chan struct{}                      { return nil }
func (w *waitingCard) Transmit(context.Context, []byte) ([]byte, error) {
	return []byte{0x90, 0x00}, nil
}
func (w *waitingCard) End(apdu.Disposition) error { return nil }
func (w *waitingCard) Close() error               { return nil }
func (w *waitingCard) Begin(ctx context.Context) error {
	<-ctx.Done()
	w.abandoned <- ctx.Err()
	return ctx.Err()
}

// A host that hangs up while its Begin waits for the card takes its request with it: the
// server stops waiting on its behalf, while the server itself goes on.
func TestHangUpAbandonsWaitingRequest(t *testing.T) {
	card := &waitingCard{abandoned: make(chan error, 1)}
	path := serveCard(t, card)
	raw, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeMessage(raw, opBegin, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // let the request reach Begin
	raw.Close()
	select {
	case err := <-card.abandoned:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the waiting Begin ended with %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the server still waits for the card on behalf of a host that hung up")
	}
	if _, err := net.Dial("unix", path); err != nil {
		t.Errorf("the server stopped with the connection: %v", err)
	}
}

// A Watcher hears of a removal and an insertion within a fraction of a second, counts a
// removal followed at once by an insertion, and takes a daemon that went away for a removal.
func TestWatcher(t *testing.T) {
	d, err := yubikey.New(yubikey.Options{Serial: 98})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "card.sock")
	ln, err := unixsock.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { (&Server{Card: d.Card}).Serve(ctx, ln); close(served) }()
	defer func() { cancel(); <-served }()

	w, err := Watch(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if !w.Present() || w.Removals() != 0 {
		t.Fatalf("at start: present %v, removals %d", w.Present(), w.Removals())
	}
	// change performs f and waits for the watcher to report present and removals.
	change := func(what string, f func(), present bool, removals uint64) {
		t.Helper()
		ch := w.Changed()
		start := time.Now()
		f()
		for w.Present() != present || w.Removals() != removals {
			select {
			case <-ch:
				ch = w.Changed()
			case <-time.After(time.Second):
				t.Fatalf("%s: watcher says present %v, removals %d after 1s; want %v, %d", what, w.Present(), w.Removals(), present, removals)
			}
		}
		if d := time.Since(start); d > 250*time.Millisecond {
			t.Errorf("%s reported after %v", what, d)
		}
	}
	change("removal", d.Card.Remove, false, 1)
	change("insertion", d.Card.Insert, true, 1)
	change("removal and insertion", func() { d.Card.Remove(); d.Card.Insert() }, true, 2)
	change("daemon gone", func() { cancel(); <-served }, false, 3)
	if w.Err() == nil {
		t.Error("no error for the lost daemon")
	}
}

package unixsock

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// pair returns a Conn and the net.UnixConn at the other end.
func pair(t *testing.T) (*Conn, *net.UnixConn) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "s"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.DialUnix("unix", nil, ln.Addr().(*net.UnixAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	uc, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewConn(uc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, peer
}

// Bytes go both ways intact; a write larger than the socket buffer waits for the reader, and a
// read waits for the writer.
func TestConnReadWrite(t *testing.T) {
	c, peer := pair(t)
	big := make([]byte, 4<<20)
	rand.Read(big)
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(big))))
		got <- b
	}()
	if n, err := c.Write(big); n != len(big) || err != nil {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatalf("the peer read %d bytes, not the %d written", len(b), len(big))
	}

	go func() {
		time.Sleep(20 * time.Millisecond)
		peer.Write(big[:100])
	}()
	buf := make([]byte, 1000)
	if n, err := io.ReadFull(c, buf[:100]); n != 100 || err != nil || !bytes.Equal(buf[:100], big[:100]) {
		t.Fatalf("ReadFull: %d, %v", n, err)
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Errorf("empty Read: %d, %v", n, err)
	}
}

// The peer's hang-up reads as io.EOF, and a write to it fails with EPIPE rather than killing
// the process with SIGPIPE.
func TestConnPeerGone(t *testing.T) {
	c, peer := pair(t)
	peer.Close()
	if n, err := c.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("Read after the peer closed: %d, %v; want io.EOF", n, err)
	}
	var err error
	for range 10 { // the first write may still be accepted
		if _, err = c.Write([]byte("hello")); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.EPIPE) {
		t.Errorf("Write after the peer closed: %v, want EPIPE", err)
	}
}

// Deadlines and Close end a waiting Read as they do on net.UnixConn.
func TestConnDeadlineAndClose(t *testing.T) {
	c, _ := pair(t)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past its deadline: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read when closed: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a waiting Read")
	}
}

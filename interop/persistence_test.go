package interop

import (
	"context"
	"crypto"
	"errors"
	"math/rand/v2"
	"net"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"tokenlab/apdu/vpcd"
	"tokenlab/emulator/piv"
	"tokenlab/emulator/yubikey"
	"tokenlab/middleware/pivclient"
)

// vpcdConn is the reader side of a vpcd connection: the test plays pcscd's vpcd driver.
type vpcdConn struct{ c net.Conn }

func (v vpcdConn) send(payload []byte) error {
	out, err := vpcd.AppendFrame(nil, payload)
	if err != nil {
		return err
	}
	_, err = v.c.Write(out)
	return err
}

func (v vpcdConn) Transmit(_ context.Context, cmd []byte) ([]byte, error) {
	if err := v.send(cmd); err != nil {
		return nil, err
	}
	v.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	return vpcd.ReadFrame(v.c, nil)
}

// insert starts `tokenlab serve` against a vpcd listener of the test's own and returns a client
// for the card once it is connected and powered.
func insert(t *testing.T, dir string) (*exec.Cmd, *pivclient.Client, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := exec.Command(tokenlabBin, "serve", "--state", dir, "--vpcd", ln.Addr().String())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("tokenlab serve did not connect: %v", err)
	}
	v := vpcdConn{c}
	v.send([]byte{byte(vpcd.PowerOn)})
	cl := pivclient.New(v)
	if _, err := cl.Select(context.Background()); err != nil {
		t.Fatal(err)
	}
	return cmd, cl, c
}

// TestKillDuringWrites SIGKILLs `tokenlab serve` while it is busy with wrong and right PINs and
// key generations, restarts it, and checks that no PIN try came back, that at most one was lost
// (the one in flight, or the restore a right PIN defers), and that every key the card
// acknowledged is there. The card's PIN counter is raised to 255 so the loop can run long.
func TestKillDuringWrites(t *testing.T) {
	ctx := context.Background()
	dir := newCard(t)
	{
		d, err := yubikey.Open(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		c := pivclient.New(d.Card)
		c.Select(ctx)
		if err := c.AuthenticateManagementKey(ctx, pivclient.AlgAES192, piv.DefaultManagementKey); err != nil {
			t.Fatal(err)
		}
		c.VerifyPIN(ctx, []byte("123456"))
		if err := c.SetPINRetries(ctx, 255, 3); err != nil {
			t.Fatal(err)
		}
		d.Close()
	}

	acked := 255 // PIN tries left, as acknowledged by the card
	wrongPINs, rightPINs := 0, 0
	keys := map[byte]crypto.PublicKey{} // slot -> acknowledged public key
	rounds := 6
	for round := 0; round < rounds; round++ {
		cmd, c, conn := insert(t, dir)
		// Check what the previous round left behind.
		m, err := c.GetMetadata(ctx, 0x80)
		if err != nil {
			t.Fatal(err)
		}
		if m.Retries > acked {
			t.Fatalf("round %d: %d PIN tries after restart, but the card had acknowledged %d: a try came back", round, m.Retries, acked)
		}
		if m.Retries < acked-1 {
			t.Fatalf("round %d: %d PIN tries after restart, acknowledged %d: more than the one in flight were lost", round, m.Retries, acked)
		}
		acked = m.Retries
		for slot, pub := range keys {
			m, err := c.GetMetadata(ctx, slot)
			if err != nil {
				t.Fatalf("round %d: acknowledged key in %02x is gone: %v", round, slot, err)
			}
			if !publicEqual(m.PublicKey, pub) {
				t.Fatalf("round %d: key in %02x is not the acknowledged one", round, slot)
			}
		}
		if err := c.AuthenticateManagementKey(ctx, pivclient.AlgAES192, piv.DefaultManagementKey); err != nil {
			t.Fatal(err)
		}

		// Work until killed at a random moment. Only a failure after the kill ends a round.
		killAt := time.Duration(50+rand.IntN(250)) * time.Millisecond
		var killed atomic.Bool
		timer := time.AfterFunc(killAt, func() { killed.Store(true); cmd.Process.Kill() })
		var stop error
		wrong := 0
		for i := 0; stop == nil; i++ {
			// Every third operation a wrong PIN, at most 30 a round so that six rounds cannot use
			// up the 255 tries; now and then a right one; key generations in between.
			if i%7 == 1 {
				if err := c.VerifyPIN(ctx, []byte("123456")); err != nil {
					stop = err
					continue
				}
				acked = 255
				rightPINs++
				continue
			}
			if i%3 != 0 || wrong == 30 {
				slot := byte(0x82 + (round*7+i)%20)
				pub, err := c.GenerateKey(ctx, slot, pivclient.AlgECCP256, pivclient.PINPolicyOnce, pivclient.TouchPolicyNever)
				if err != nil {
					// The generation in flight may or may not have reached the disk.
					delete(keys, slot)
					stop = err
					continue
				}
				keys[slot] = pub
				continue
			}
			err := c.VerifyPIN(ctx, []byte("000000"))
			var ae *pivclient.AuthError
			if errors.As(err, &ae) {
				acked--
				wrong++
				wrongPINs++
				continue
			}
			stop = err
		}
		timer.Stop()
		if !killed.Load() {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: the card failed before it was killed: %v", round, stop)
		}
		conn.Close()
		if err := cmd.Wait(); !isKilled(err) {
			t.Fatalf("round %d: serve ended with %v, want SIGKILL", round, err)
		}
	}
	if wrongPINs < rounds || rightPINs < rounds {
		t.Errorf("only %d wrong and %d right PINs in %d rounds: the kill came before any work", wrongPINs, rightPINs, rounds)
	}
	t.Logf("%d wrong and %d right PINs and %d keys acknowledged across %d kills", wrongPINs, rightPINs, len(keys), rounds)
}

func isKilled(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && ee.String() == "signal: killed"
}

package emulator

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"tokenlab/apdu"
)

var selectPIV = []byte{0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08}

// A transaction keeps every other host out until it ends; the others' commands wait.
func TestTransactionExcludesOthers(t *testing.T) {
	c, _, _ := newTestCard()
	a, b := c.Connect(), c.Connect()
	ctx := context.Background()
	if err := a.Begin(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := b.Transmit(ctx, selectPIV)
		done <- err
	}()
	select {
	case <-done:
		t.Fatal("another connection's command ran inside a transaction")
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := a.Transmit(ctx, selectPIV); err != nil {
		t.Fatalf("the owner's command: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := c.Connect().Begin(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("second transaction: %v, want to wait until the deadline", err)
	}
	a.End(apdu.LeaveCard)
	if err := <-done; err != nil {
		t.Fatalf("waiting command after End: %v", err)
	}
	if err := a.Begin(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Begin(ctx); err == nil {
		t.Error("nested Begin accepted")
	}
	a.Close()
	if _, err := c.Transmit(ctx, selectPIV); err != nil {
		t.Errorf("after Close: %v", err)
	}
}

func TestEndReset(t *testing.T) {
	c, piv, _ := newTestCard()
	k := c.Connect()
	ctx := context.Background()
	k.Begin(ctx)
	k.Transmit(ctx, selectPIV)
	k.End(apdu.ResetCard)
	if piv.deselects != 1 {
		t.Errorf("End(Reset) deselected %d times, want 1", piv.deselects)
	}
	out, _ := k.Transmit(ctx, []byte{0x00, 0x01, 0x00, 0x01})
	if string(out[len(out)-2:]) != "\x6A\x82" {
		t.Errorf("after a reset the applet is still selected: % X", out)
	}
}

// Removal makes every connection stale, even after re-insertion, and breaks a transaction.
func TestRemoval(t *testing.T) {
	c, piv, _ := newTestCard()
	ctx := context.Background()
	old := c.Connect()
	old.Begin(ctx)
	old.Transmit(ctx, selectPIV)
	changed := c.Changed()
	c.Remove()
	select {
	case <-changed:
	default:
		t.Error("Changed did not fire on removal")
	}
	if c.Present() || c.Removals() != 1 || piv.deselects != 1 {
		t.Errorf("after Remove: present %v, removals %d, deselects %d", c.Present(), c.Removals(), piv.deselects)
	}
	if _, err := old.Transmit(ctx, selectPIV); !errors.Is(err, ErrRemoved) {
		t.Errorf("stale connection: %v", err)
	}
	if _, err := c.Connect().Transmit(ctx, selectPIV); !errors.Is(err, ErrRemoved) {
		t.Errorf("new connection to an absent card: %v", err)
	}
	changed = c.Changed()
	c.Insert()
	<-changed
	if _, err := old.Transmit(ctx, selectPIV); !errors.Is(err, ErrRemoved) {
		t.Errorf("a connection from before the removal works again after re-insertion: %v", err)
	}
	fresh := c.Connect()
	if _, err := fresh.Transmit(ctx, selectPIV); err != nil {
		t.Errorf("new connection after insertion: %v", err)
	}
	// The broken transaction's owner cannot release what it no longer holds.
	old.End(apdu.LeaveCard)
	if err := fresh.Begin(ctx); err != nil {
		t.Fatal(err)
	}
	fresh.End(apdu.LeaveCard)
}

func TestConcurrentConnections(t *testing.T) {
	c, _, _ := newTestCard()
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := c.Connect()
			for j := 0; j < 50; j++ {
				if err := k.Begin(ctx); err != nil {
					t.Error(err)
					return
				}
				k.Transmit(ctx, selectPIV)
				k.Transmit(ctx, []byte{0x00, 0x01, 0x00, 0x10})
				k.End(apdu.LeaveCard)
			}
		}()
	}
	wg.Wait()
}

// A removal right after Begin took the card breaks that transaction: the stale connection does
// not keep the card from the hosts that connect after the re-insertion.
func TestRemovalRightAfterBegin(t *testing.T) {
	c, _, _ := newTestCard()
	c.afterBegin = func() { c.Remove(); c.Insert() }
	stale := c.Connect()
	err := stale.Begin(context.Background())
	c.afterBegin = nil
	if err == nil {
		if _, err := stale.Transmit(context.Background(), selectPIV); !errors.Is(err, ErrRemoved) {
			t.Errorf("the stale connection's command: %v, want ErrRemoved", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	fresh := c.Connect()
	if err := fresh.Begin(ctx); err != nil {
		t.Fatalf("a connection made after the re-insertion cannot begin: %v", err)
	}
	fresh.End(apdu.LeaveCard)
	stale.End(apdu.LeaveCard)
}

// The same race, left to the scheduler.
func TestBeginRacesRemove(t *testing.T) {
	c, _, _ := newTestCard()
	for i := range 1000 {
		k := c.Connect()
		removed := make(chan struct{})
		go func() { c.Remove(); close(removed) }()
		err := k.Begin(context.Background())
		<-removed
		c.Insert()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		k2 := c.Connect()
		if err2 := k2.Begin(ctx); err2 != nil {
			cancel()
			t.Fatalf("#%d: Begin %v, then a removal; a new connection's Begin: %v", i, err, err2)
		}
		cancel()
		k2.End(apdu.LeaveCard)
		k.End(apdu.LeaveCard)
	}
}

// The reader's reset waits for another host's transaction instead of wiping its security
// status in the middle of it.
func TestReaderResetWaitsForTransaction(t *testing.T) {
	c, piv, _ := newTestCard()
	ctx := context.Background()
	k := c.Connect()
	if err := k.Begin(ctx); err != nil {
		t.Fatal(err)
	}
	k.Transmit(ctx, selectPIV)
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := c.ReaderReset(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ReaderReset during a transaction: %v, want to wait until the deadline", err)
	}
	done := make(chan error, 1)
	go func() { done <- c.ReaderReset(ctx) }()
	select {
	case err := <-done:
		t.Fatalf("the reader's reset went through another host's transaction (%v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	if out, _ := k.Transmit(ctx, []byte{0x00, 0x01, 0x00, 0x01}); string(out[len(out)-2:]) != "\x90\x00" || piv.deselects != 0 {
		t.Errorf("inside the transaction: % X, %d deselects; want the applet still selected", out, piv.deselects)
	}
	k.End(apdu.LeaveCard)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if piv.deselects != 1 {
		t.Errorf("after the transaction the reset deselected %d times, want 1", piv.deselects)
	}
}

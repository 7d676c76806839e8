package piv

import (
	"context"
	"encoding/hex"
	"errors"
	"slices"
	"testing"

	"tokenlab/apdu"
	"tokenlab/emulator"
	"tokenlab/emulator/keystore"
	"tokenlab/emulator/state"
)

// commitLog records the PIN and PUK counters of every commit, and can fail commits. With
// counters set, the applet commits counter-only changes through CommitCounters, as a card with
// a state directory does; kinds records which way each commit went.
type commitLog struct {
	pin, puk []int
	kinds    []string         // "document" or "counters"
	fail     func(n int) bool // fail the n-th commit (0-based)
	counters bool
}

func (l *commitLog) commit(st *state.PIV) error {
	return l.record("document", st.PIN.Retries, st.PUK.Retries)
}

func (l *commitLog) commitCounters(pin, puk int) error { return l.record("counters", pin, puk) }

func (l *commitLog) record(kind string, pin, puk int) error {
	n := len(l.pin)
	l.pin = append(l.pin, pin)
	l.puk = append(l.puk, puk)
	l.kinds = append(l.kinds, kind)
	if l.fail != nil && l.fail(n) {
		return errors.New("disk full")
	}
	return nil
}

func newLoggedCard(t *testing.T, l *commitLog) *emulator.Card {
	c, _ := newLoggedApplet(t, l)
	return c
}

func newLoggedApplet(t *testing.T, l *commitLog) (*emulator.Card, *Applet) {
	t.Helper()
	cfg := Config{Version: Version{5, 7, 1}, Serial: 1, Keys: keystore.Software{}, Commit: l.commit}
	if l.counters {
		cfg.CommitCounters = l.commitCounters
	}
	a, err := New(cfg, AES192)
	if err != nil {
		t.Fatal(err)
	}
	c := emulator.New([]byte{0x3B, 0}, a)
	send(t, c, "00A4040005A000000308")
	return c, a
}

func send(t *testing.T, c *emulator.Card, h string) apdu.StatusWord {
	t.Helper()
	out, err := c.Transmit(context.Background(), mustHex(t, h))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := apdu.ParseResponse(out)
	return r.SW
}

func mustHex(t *testing.T, h string) []byte {
	t.Helper()
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatalf("bad hex %q: %v", h, err)
	}
	return b
}

const (
	verifyRight = "0020008008313233343536FFFF"
	verifyWrong = "0020008008303030303030FFFF"
)

// The try is committed before the comparison: a right PIN commits the decrement, then the
// restored counter; a wrong one commits only the decrement. With CommitCounters, a VERIFY goes
// through it alone; a change of the PIN itself goes into the document.
func TestTryCommittedBeforeComparison(t *testing.T) {
	for _, counters := range []bool{false, true} {
		l := &commitLog{counters: counters}
		c := newLoggedCard(t, l)
		if sw := send(t, c, verifyWrong); sw != 0x63C2 {
			t.Fatalf("wrong PIN: %v", sw)
		}
		if len(l.pin) != 1 || l.pin[0] != 2 {
			t.Fatalf("wrong PIN committed %v, want [2]", l.pin)
		}
		if sw := send(t, c, verifyRight); sw != apdu.SWSuccess {
			t.Fatalf("right PIN: %v", sw)
		}
		if len(l.pin) != 3 || l.pin[1] != 1 || l.pin[2] != 3 {
			t.Fatalf("right PIN committed %v after [2], want [1 3]: decrement first, then restore", l.pin[1:])
		}
		// The PUK alike, through RESET RETRY COUNTER.
		if sw := send(t, c, "002C0080103132333435363738313131313131FFFF"); sw != apdu.SWSuccess {
			t.Fatalf("unblock: %v", sw)
		}
		// Two commits: the PUK try, then the restored PUK with the new PIN in one go.
		if got, pins := l.puk[len(l.puk)-2:], l.pin[len(l.pin)-2:]; got[0] != 2 || got[1] != 3 || pins[1] != 3 {
			t.Errorf("unblock committed PUK %v and PIN %v, want PUK [2 3] and a restored PIN", got, pins)
		}
		want := []string{"document", "document", "document", "document", "document"}
		if counters {
			want = []string{"counters", "counters", "counters", "counters", "document"}
		}
		if !slices.Equal(l.kinds, want) {
			t.Errorf("CommitCounters set: %v; commits went %v, want %v", counters, l.kinds, want)
		}
	}
}

// If the decrement cannot be committed, the PIN is not compared at all: even the right PIN fails
// and the counter stays as it was. If the restore after a match cannot be committed, the try
// stays consumed and the PIN is not verified. (A wrong PIN goes first, so that the restore is
// not one that may be deferred.)
func TestNoComparisonWithoutCommit(t *testing.T) {
	for _, counters := range []bool{false, true} {
		for _, tt := range []struct {
			name    string
			failing int // the commit that fails, after the wrong PIN's
			retries int // the PIN counter the applet then holds
		}{
			{"decrement", 0, 2},
			{"restore", 1, 1},
		} {
			l := &commitLog{counters: counters}
			c, a := newLoggedApplet(t, l)
			if sw := send(t, c, verifyWrong); sw != 0x63C2 {
				t.Fatalf("wrong PIN: %v", sw)
			}
			l.fail = func(n int) bool { return n == 1+tt.failing }
			if sw := send(t, c, verifyRight); sw != apdu.SWMemoryFailure {
				t.Fatalf("%s fails: right PIN answered %v, want 6581", tt.name, sw)
			}
			if len(l.pin) != 1+tt.failing+1 || a.pinVerified || a.p.pin.retries != tt.retries {
				t.Errorf("%s fails: commits %v, verified %v, counter %d; want %d commits, not verified, counter %d",
					tt.name, l.pin, a.pinVerified, a.p.pin.retries, 1+tt.failing+1, tt.retries)
			}
		}
	}
}

// A right PIN from a full counter commits the try but defers the restore: the committed
// counter, one below, already holds the next VERIFY's try, so a run of right PINs commits once.
// A wrong PIN then uses the committed try; any commit, or Flush, writes the full counter. After
// a crash with the restore deferred (a card loaded from the committed state), one try is lost
// and the next right PIN commits the full counter at once: losses never add up.
func TestDeferredRestore(t *testing.T) {
	for _, counters := range []bool{false, true} {
		l := &commitLog{counters: counters}
		c, a := newLoggedApplet(t, l)
		for i := range 3 {
			if sw := send(t, c, verifyRight); sw != apdu.SWSuccess {
				t.Fatalf("right PIN %d: %v", i, sw)
			}
		}
		if !slices.Equal(l.pin, []int{2}) || a.p.pin.retries != 3 || !a.pinLag {
			t.Fatalf("three right PINs committed %v, counter %d, deferred %v; want [2], 3, true", l.pin, a.p.pin.retries, a.pinLag)
		}
		// Status without data says 3 tries, as memory does.
		if sw := send(t, c, "0020008000"); sw != apdu.SWSuccess {
			t.Fatalf("status: %v", sw)
		}
		if sw := send(t, c, verifyWrong); sw != 0x63C2 {
			t.Fatalf("wrong PIN: %v", sw)
		}
		if !slices.Equal(l.pin, []int{2}) || a.pinLag {
			t.Fatalf("a wrong PIN on the committed try committed %v (want nothing more), deferred %v", l.pin, a.pinLag)
		}
		if sw := send(t, c, verifyWrong); sw != 0x63C1 {
			t.Fatalf("second wrong PIN: %v", sw)
		}
		if !slices.Equal(l.pin, []int{2, 1}) {
			t.Fatalf("the second wrong PIN committed %v, want [2 1]", l.pin)
		}
		// From a lower counter the restore is committed at once.
		if sw := send(t, c, verifyRight); sw != apdu.SWSuccess || !slices.Equal(l.pin, []int{2, 1, 0, 3}) || a.pinLag {
			t.Fatalf("right PIN from 1: %v, committed %v, deferred %v; want [2 1 0 3], none", sw, l.pin, a.pinLag)
		}
		send(t, c, verifyRight)
		if !a.pinLag {
			t.Fatal("right PIN from full: restore not deferred")
		}
		var err error
		c.Exclusive(func() { err = a.Flush() })
		if err != nil || a.pinLag || !slices.Equal(l.pin[len(l.pin)-2:], []int{2, 3}) {
			t.Fatalf("Flush: %v, deferred %v, committed %v; want the full counter committed", err, a.pinLag, l.pin)
		}
		c.Exclusive(func() { err = a.Flush() })
		if n := len(l.pin); err != nil || n != 6 {
			t.Fatalf("a second Flush: %v, %d commits; want nothing written", err, n)
		}

		// A crash with the restore deferred: the card comes back from what was committed.
		send(t, c, verifyRight)
		st := a.State()
		st.PIN.Retries = l.pin[len(l.pin)-1]
		if st.PIN.Retries != 2 {
			t.Fatalf("committed PIN counter %d, want 2", st.PIN.Retries)
		}
		l2 := &commitLog{counters: counters}
		cfg := a.cfg
		cfg.Commit, cfg.CommitCounters = l2.commit, nil
		if counters {
			cfg.CommitCounters = l2.commitCounters
		}
		b, err := Load(cfg, st)
		if err != nil {
			t.Fatal(err)
		}
		c2 := emulator.New([]byte{0x3B, 0}, b)
		send(t, c2, "00A4040005A000000308")
		if sw := send(t, c2, verifyRight); sw != apdu.SWSuccess || !slices.Equal(l2.pin, []int{1, 3}) || b.pinLag {
			t.Fatalf("after the crash a right PIN: %v, committed %v, deferred %v; want [1 3] and none", sw, l2.pin, b.pinLag)
		}
	}
}

// After a failed commit, memory and disk may differ (a document replaced, its counters not), so
// the applet stops: every command is refused 6581, nothing is changed or committed again, and
// no security status survives, even once the disk works again.
func TestFailStopAfterCommitError(t *testing.T) {
	for _, counters := range []bool{false, true} {
		l := &commitLog{counters: counters}
		c, a := newLoggedApplet(t, l)
		if sw := send(t, c, verifyRight); sw != apdu.SWSuccess {
			t.Fatalf("VERIFY: %v", sw)
		}
		failing := true
		l.fail = func(int) bool { return failing }
		// CHANGE REFERENCE DATA: the try's commit fails.
		if sw := send(t, c, "0024008010313233343536FFFF363534333231FFFF"); sw != apdu.SWMemoryFailure {
			t.Fatalf("CHANGE REFERENCE DATA with a failing disk: %v", sw)
		}
		if a.Failed() == nil {
			t.Error("Failed() is nil after a failed commit")
		}
		failing = false
		commits := len(l.pin)
		for _, h := range []string{
			"00200080",   // PIN status: was verified
			verifyRight,  // would commit
			"00FD000000", // GET VERSION: reads nothing from the state, still refused
			"00CB3FFF055C035FC102",
			"0024008010313233343536FFFF363534333231FFFF",
		} {
			if sw := send(t, c, h); sw != apdu.SWMemoryFailure {
				t.Errorf("counters %v: %s after a failed commit answered %v, want 6581", counters, h, sw)
			}
		}
		if len(l.pin) != commits {
			t.Errorf("counters %v: %d commits after the applet stopped", counters, len(l.pin)-commits)
		}
	}
}

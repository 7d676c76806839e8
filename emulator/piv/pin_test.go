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
// stays consumed and the PIN is not verified.
func TestNoComparisonWithoutCommit(t *testing.T) {
	for _, counters := range []bool{false, true} {
		for _, tt := range []struct {
			name    string
			failing int // the commit that fails
			retries int // the PIN counter the applet then holds
		}{
			{"decrement", 0, 3},
			{"restore", 1, 2},
		} {
			l := &commitLog{counters: counters, fail: func(n int) bool { return n == tt.failing }}
			c, a := newLoggedApplet(t, l)
			if sw := send(t, c, verifyRight); sw != apdu.SWMemoryFailure {
				t.Fatalf("%s fails: right PIN answered %v, want 6581", tt.name, sw)
			}
			if len(l.pin) != tt.failing+1 || a.pinVerified || a.p.pin.retries != tt.retries {
				t.Errorf("%s fails: commits %v, verified %v, counter %d; want %d commits, not verified, counter %d",
					tt.name, l.pin, a.pinVerified, a.p.pin.retries, tt.failing+1, tt.retries)
			}
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

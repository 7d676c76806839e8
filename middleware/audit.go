package middleware

import (
	"fmt"
	"sync"
	"time"
)

// EventKind is what happened.
type EventKind int

// Event kinds. Every PIN prompt, every silent re-use of a cached PIN, every VERIFY the card
// sees, every private-key operation, logout, reset and removal is one event.
const (
	EventPrompt         EventKind = iota + 1 // the person was asked for the PIN
	EventApplicationPIN                      // the application supplied the PIN (C_Login with a PIN)
	EventCacheReuse                          // a cached PIN was presented without asking
	EventCardVerified                        // the card already had the PIN verified; nothing was asked
	EventVerify                              // the card accepted a VERIFY
	EventVerifyFailed                        // the card refused a VERIFY
	EventSign                                // a signature (or raw RSA) with a card key
	EventDecrypt                             // an RSA decryption with a card key
	EventKeyAgreement                        // an ECDH with a card key
	EventLogout                              // the application's login ended
	EventCardLogout                          // the card's PIN status was cleared (VERIFY P1=FF)
	EventCardReset                           // the card was reset
	EventCacheCleared                        // cached PINs were forgotten
	EventRemoved                             // the card left its reader
	EventInserted                            // the card came back
	EventPolicy                              // a policy decision worth showing (a bypass, an expiry)
)

var eventNames = map[EventKind]string{
	EventPrompt:         "prompt",
	EventApplicationPIN: "application-pin",
	EventCacheReuse:     "cache-reuse",
	EventCardVerified:   "card-verified",
	EventVerify:         "verify",
	EventVerifyFailed:   "verify-failed",
	EventSign:           "sign",
	EventDecrypt:        "decrypt",
	EventKeyAgreement:   "key-agreement",
	EventLogout:         "logout",
	EventCardLogout:     "card-logout",
	EventCardReset:      "card-reset",
	EventCacheCleared:   "cache-cleared",
	EventRemoved:        "removed",
	EventInserted:       "inserted",
	EventPolicy:         "policy",
}

func (k EventKind) String() string {
	if n, ok := eventNames[k]; ok {
		return n
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one entry of the audit trail.
type Event struct {
	Time        time.Time
	Kind        EventKind
	Application string
	Token       string // "YubiKey 12345678"
	Slot        string // "9c", or "" when no key is involved
	Reason      string
}

func (e Event) String() string {
	s := fmt.Sprintf("%s %s %s", e.Time.Format(time.RFC3339Nano), e.Application, e.Kind)
	if e.Slot != "" {
		s += " slot " + e.Slot
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Audit receives events. Implementations must be safe for concurrent use and must not block.
type Audit interface {
	Record(Event)
}

// AuditFunc adapts a function to Audit.
type AuditFunc func(Event)

// Record implements Audit.
func (f AuditFunc) Record(e Event) { f(e) }

// Recorder keeps every event in memory, for tests and the lab.
type Recorder struct {
	mu     sync.Mutex
	events []Event
}

// Record implements Audit.
func (r *Recorder) Record(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

// Events returns a copy of the events so far.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// Count returns how many events of kind k the application app produced ("" counts every
// application).
func (r *Recorder) Count(app string, k EventKind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Kind == k && (app == "" || e.Application == app) {
			n++
		}
	}
	return n
}

// Clock tells the time; tests use a fake one.
type Clock interface {
	Now() time.Time
}

// SystemClock is the Clock of the system's time.
var SystemClock Clock = systemClock{}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// FakeClock is a Clock that moves only when told to.
type FakeClock struct {
	mu  sync.Mutex
	now time.Time
}

// NewFakeClock returns a clock stopped at t.
func NewFakeClock(t time.Time) *FakeClock { return &FakeClock{now: t} }

// Now implements Clock.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

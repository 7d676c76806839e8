package middleware

import (
	"fmt"
	"sync"
	"time"
)

// cachedPIN is a PIN a middleware keeps after it was entered.
type cachedPIN struct {
	pin      []byte
	entered  time.Time
	lastUsed time.Time
	uses     int // presentations to the card since it was entered
}

func newCachedPIN(pin []byte, now time.Time) *cachedPIN {
	return &cachedPIN{pin: append([]byte(nil), pin...), entered: now, lastUsed: now}
}

// expired says why the policy no longer lets the PIN be used, or "" when it does.
func (c *cachedPIN) expired(p Policy, now time.Time) string {
	switch {
	case p.TTL > 0 && now.Sub(c.entered) >= p.TTL:
		return fmt.Sprintf("cached PIN older than %v", p.TTL)
	case p.Idle > 0 && now.Sub(c.lastUsed) >= p.Idle:
		return fmt.Sprintf("cached PIN unused for %v", p.Idle)
	case p.MaxUses > 0 && c.uses >= p.MaxUses:
		return fmt.Sprintf("cached PIN used %d times", p.MaxUses)
	}
	return ""
}

func (c *cachedPIN) use(now time.Time) []byte {
	c.uses++
	c.lastUsed = now
	return append([]byte(nil), c.pin...)
}

// wipe overwrites the PIN.
func (c *cachedPIN) wipe() {
	if c == nil {
		return
	}
	for i := range c.pin {
		c.pin[i] = 0
	}
	c.pin = nil
}

// LogonSession is what an operating system's logon session is to real middleware: the scope of
// single logon. The Tokens of every application in one session share it. It is safe for
// concurrent use.
type LogonSession struct {
	mu     sync.Mutex
	pins   map[string]*cachedPIN // by token label
	logins map[string]int        // logged-in applications, by token label
}

// NewLogonSession returns an empty logon session.
func NewLogonSession() *LogonSession {
	return &LogonSession{pins: map[string]*cachedPIN{}, logins: map[string]int{}}
}

func (s *LogonSession) enter(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logins[token]++
}

func (s *LogonSession) leave(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logins[token] > 0 {
		s.logins[token]--
	}
}

// active returns how many applications of the session are logged in on the token.
func (s *LogonSession) active(token string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logins[token]
}

// take returns a copy of the token's cached PIN and counts the use, or says why there is none
// to use ("" when none was ever entered). An expired PIN is wiped.
func (s *LogonSession) take(token string, p Policy, now time.Time) (pin []byte, expired string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.pins[token]
	if c == nil {
		return nil, ""
	}
	if why := c.expired(p, now); why != "" {
		c.wipe()
		delete(s.pins, token)
		return nil, why
	}
	return c.use(now), ""
}

// expire wipes the token's PIN if the policy says its time is up, and says why.
func (s *LogonSession) expire(token string, p Policy, now time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.pins[token]
	if c == nil {
		return ""
	}
	why := c.expired(p, now)
	if why != "" {
		c.wipe()
		delete(s.pins, token)
	}
	return why
}

// touch marks the token's PIN as used now without presenting it: the card was found still
// verified, which counts as activity for an idle timeout.
func (s *LogonSession) touch(token string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.pins[token]; c != nil {
		c.lastUsed = now
	}
}

func (s *LogonSession) put(token string, c *cachedPIN) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pins[token].wipe()
	s.pins[token] = c
}

// forget wipes the token's PIN and reports whether there was one.
func (s *LogonSession) forget(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.pins[token]
	c.wipe()
	delete(s.pins, token)
	return ok
}

// Lock forgets every PIN of the session, as locking the workstation or logging off does.
func (s *LogonSession) Lock() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, c := range s.pins {
		c.wipe()
		delete(s.pins, k)
	}
}

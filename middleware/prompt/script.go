package prompt

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// Answer is one scripted reply: a PIN, or an error such as ErrCancelled.
type Answer struct {
	PIN string // test PINs are not secrets, so a string keeps scripts short
	Err error
}

// Script is a Prompter for tests: it gives its answers in order and records every Request it
// receives. It is safe for concurrent use.
type Script struct {
	mu       sync.Mutex
	answers  []Answer
	requests []Request
}

// NewScript returns a Script that will give answers in order.
func NewScript(answers ...Answer) *Script {
	return &Script{answers: slices.Clone(answers)}
}

// PIN records r and gives the next answer: a fresh copy of its PIN, ErrCancelled for an empty
// PIN, or its error. Running out of answers is an error. When ctx has ended, PIN records r but
// keeps the answer for the next call.
func (s *Script) PIN(ctx context.Context, r Request) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("prompt: script, request %d: %w", len(s.requests), err)
	}
	if len(s.answers) == 0 {
		return nil, fmt.Errorf("prompt: script has no answer left for request %d (%s for %s)",
			len(s.requests), r.Application, r.Reason)
	}
	a := s.answers[0]
	s.answers = s.answers[1:]
	switch {
	case a.Err != nil:
		return nil, a.Err
	case a.PIN == "":
		return nil, ErrCancelled
	}
	return []byte(a.PIN), nil
}

// Requests returns a copy of every Request received so far, in order.
func (s *Script) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Remaining returns how many answers are left, so a test can check that all were asked for.
func (s *Script) Remaining() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.answers)
}

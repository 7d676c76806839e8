package prompt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestScript(t *testing.T) {
	boom := errors.New("boom")
	s := NewScript(
		Answer{PIN: "1111"},
		Answer{Err: ErrCancelled},
		Answer{},
		Answer{Err: boom},
		Answer{PIN: "2222"},
	)
	reqs := []Request{
		{Application: "a", Attempt: 1},
		{Application: "b", Attempt: 1},
		{Application: "c", Attempt: 1},
		{Application: "d", Attempt: 1},
		{Application: "e", Attempt: 1},
		{Application: "f", Attempt: 1, Reason: "one too many"},
	}
	wants := []struct {
		pin     string
		wantErr error
		wantMsg string
	}{
		{pin: "1111"},
		{wantErr: ErrCancelled},
		{wantErr: ErrCancelled},
		{wantErr: boom},
		{pin: "2222"},
		{wantErr: errAny, wantMsg: "script has no answer left for request 6 (f for one too many)"},
	}
	for i, w := range wants {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			pin, err := s.PIN(t.Context(), reqs[i])
			errorIs(t, err, w.wantErr)
			if err != nil && !strings.Contains(err.Error(), w.wantMsg) {
				t.Errorf("error %q does not say %q", err, w.wantMsg)
			}
			if string(pin) != w.pin {
				t.Errorf("PIN = %q, want %q", pin, w.pin)
			}
		})
	}
	got := s.Requests()
	if len(got) != len(reqs) {
		t.Fatalf("recorded %d requests, want %d", len(got), len(reqs))
	}
	for i := range reqs {
		if got[i] != reqs[i] {
			t.Errorf("request %d = %+v, want %+v", i, got[i], reqs[i])
		}
	}
	got[0].Application = "changed"
	if s.Requests()[0].Application != "a" {
		t.Error("Requests returned the script's own slice")
	}
	if s.Remaining() != 0 {
		t.Errorf("Remaining() = %d, want 0", s.Remaining())
	}
}

func TestScriptAnswersAreFresh(t *testing.T) {
	answers := []Answer{{PIN: "1234"}, {PIN: "1234"}}
	s := NewScript(answers...)
	answers[1].PIN = "changed"
	a, _ := s.PIN(t.Context(), loginRequest)
	clear(a)
	b, _ := s.PIN(t.Context(), loginRequest)
	if string(b) != "1234" {
		t.Errorf("second answer = %q, want 1234 (unaffected by the caller's slices)", b)
	}
}

func TestScriptContext(t *testing.T) {
	s := NewScript(Answer{PIN: "1234"})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.PIN(ctx, loginRequest); !errors.Is(err, context.Canceled) {
		t.Errorf("PIN with a cancelled context: %v", err)
	}
	if s.Remaining() != 1 || len(s.Requests()) != 1 {
		t.Errorf("after a cancelled request: %d answers left, %d requests recorded; want 1 and 1",
			s.Remaining(), len(s.Requests()))
	}
}

func TestScriptConcurrent(t *testing.T) {
	checkGoroutines(t)
	const n = 50
	answers := make([]Answer, n)
	for i := range answers {
		answers[i] = Answer{PIN: fmt.Sprint(i)}
	}
	s := NewScript(answers...)
	var wg sync.WaitGroup
	pins := make(chan string, n+1)
	for i := range n + 1 {
		wg.Go(func() {
			pin, err := s.PIN(t.Context(), Request{Attempt: i})
			if err == nil {
				pins <- string(pin)
			}
			s.Requests()
		})
	}
	wg.Wait()
	close(pins)
	seen := map[string]bool{}
	for p := range pins {
		if seen[p] {
			t.Errorf("answer %s given twice", p)
		}
		seen[p] = true
	}
	if len(seen) != n || len(s.Requests()) != n+1 || s.Remaining() != 0 {
		t.Errorf("%d distinct answers, %d requests, %d left; want %d, %d, 0", len(seen), len(s.Requests()), s.Remaining(), n, n+1)
	}
}

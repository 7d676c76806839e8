package ike

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// TOTP is a time-based one-time password generator and checker. RFC 6238 on HOTP (RFC 4226).
type TOTP struct {
	Secret []byte
	// Digits of a code; 0 means 6.
	Digits int
	// Step is the time step X, at least 1 s; 0 means 30 s (FortiToken Mobile uses 60 s).
	Step time.Duration
	// Window is how many steps before and after the current one are accepted (RFC 6238 §6);
	// 0 means the current step only, negative is an error.
	Window int
}

// ParseTOTPSecret decodes a base32 secret as authenticator apps show them (padding and case
// optional).
func ParseTOTPSecret(s string) ([]byte, error) {
	s = strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), " ", ""))
	b, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("ike: TOTP secret is not base32")
	}
	return b, nil
}

func (t TOTP) digits() int {
	if t.Digits == 0 {
		return 6
	}
	return t.Digits
}

func (t TOTP) step() time.Duration {
	if t.Step <= 0 {
		return 30 * time.Second
	}
	return t.Step
}

// check reports a generator that cannot work: a step below one second, a negative window, a
// code of fewer than 6 or more than 8 digits (RFC 4226 §5.3).
func (t TOTP) check() error {
	switch {
	case t.Step != 0 && t.Step < time.Second:
		return fmt.Errorf("TOTP step %v is below 1s", t.Step)
	case t.Window < 0:
		return fmt.Errorf("TOTP window %d is negative", t.Window)
	case t.Digits != 0 && (t.Digits < 6 || t.Digits > 8):
		return fmt.Errorf("TOTP codes of %d digits: want 6 to 8", t.Digits)
	}
	return nil
}

// counter is the time step T of a moment: floor(unix time / X). It is computed in nanoseconds,
// so that a step check refuses never divides by zero here.
func (t TOTP) counter(now time.Time) int64 { return now.UnixNano() / int64(t.step()) }

// code is HOTP(K, c) with HMAC-SHA-1 and dynamic truncation. RFC 4226 §5.3.
func (t TOTP) code(c int64) string {
	m := hmac.New(sha1.New, t.Secret)
	m.Write(binary.BigEndian.AppendUint64(nil, uint64(c)))
	sum := m.Sum(nil)
	off := sum[len(sum)-1] & 0x0F
	v := binary.BigEndian.Uint32(sum[off:]) & 0x7FFFFFFF
	mod := uint32(1)
	for i := 0; i < t.digits(); i++ {
		mod *= 10
	}
	return fmt.Sprintf("%0*d", t.digits(), v%mod)
}

// At returns the code for a moment.
func (t TOTP) At(now time.Time) string { return t.code(t.counter(now)) }

// candidate is one acceptable code and its time step.
type candidate struct {
	counter int64
	code    string
}

// candidates are the codes accepted at now, newest step last, skipping steps at or before
// used (an accepted code must not be accepted again, RFC 6238 §5.2).
func (t TOTP) candidates(now time.Time, used int64) []candidate {
	c := t.counter(now)
	var out []candidate
	for i := c - int64(t.Window); i <= c+int64(t.Window); i++ {
		if i > used {
			out = append(out, candidate{i, t.code(i)})
		}
	}
	return out
}

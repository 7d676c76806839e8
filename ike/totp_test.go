package ike

import (
	"testing"
	"time"
)

// TestTOTP: RFC 6238 Appendix B's SHA-1 vectors, and steps that are not whole seconds do not
// panic (the configuration refuses them, see TestTOTPCheck).
func TestTOTP(t *testing.T) {
	g := TOTP{Secret: []byte("12345678901234567890"), Digits: 8}
	for _, v := range []struct {
		unix int64
		code string
	}{{59, "94287082"}, {1111111109, "07081804"}, {1234567890, "89005924"}, {2000000000, "69279037"}} {
		if got := g.At(time.Unix(v.unix, 0)); got != v.code {
			t.Errorf("T=%d: %s, want %s", v.unix, got, v.code)
		}
	}
	for _, step := range []time.Duration{500 * time.Millisecond, time.Nanosecond, -time.Second} {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("TOTP with a %v step panics: %v", step, r)
				}
			}()
			_ = TOTP{Secret: g.Secret, Step: step}.At(time.Now())
		}()
	}
}

// TestTOTPCheck: an EAP server whose users' TOTP has a step below one second or a negative
// window is a configuration error, found when the responder starts rather than when a user
// logs in.
func TestTOTPCheck(t *testing.T) {
	for _, tc := range []struct {
		totp TOTP
		ok   bool
	}{
		{TOTP{}, true},
		{TOTP{Step: time.Second, Window: 2, Digits: 8}, true},
		{TOTP{Step: 500 * time.Millisecond}, false},
		{TOTP{Step: -30 * time.Second}, false},
		{TOTP{Window: -1}, false},
		{TOTP{Digits: 10}, false},
	} {
		tc.totp.Secret = []byte("12345678901234567890")
		cfg := &Config{PSK: []byte("k"), EAPServer: &EAPServer{Users: map[string]EAPUser{"bob": {Password: []byte("pw"), TOTP: &tc.totp}}}}
		r, err := Listen(cfg, loopback)
		if err == nil {
			r.Close()
		}
		if (err == nil) != tc.ok {
			t.Errorf("step %v window %d digits %d: Listen: %v", tc.totp.Step, tc.totp.Window, tc.totp.Digits, err)
		}
	}
}

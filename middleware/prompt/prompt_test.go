package prompt

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestRequestDescription(t *testing.T) {
	tests := []struct {
		name string
		req  Request
		want string
	}{
		{
			name: "zero request",
			want: "A program asks for the PIN of the token.",
		},
		{
			name: "login",
			req:  Request{Application: "ssh", Token: "YubiKey 12345678", Reason: "login", Retries: 3, Attempt: 1},
			want: "ssh asks for the PIN of YubiKey 12345678.\nReason: login.",
		},
		{
			name: "PIN-always signature",
			req:  Request{Application: "ike", Token: "YubiKey 1", Slot: "9c", Reason: "signature with a PIN-always key (9c).", Retries: -1},
			want: "ike asks for the PIN of YubiKey 1 (key slot 9c).\nReason: signature with a PIN-always key (9c).",
		},
		{
			name: "second attempt, two tries left",
			req:  Request{Application: "ssh", Token: "T", Reason: "login", Retries: 2, Attempt: 2},
			want: "ssh asks for the PIN of T.\nReason: login.\nWrong PIN (this is attempt 2). 2 tries left before the PIN is blocked.",
		},
		{
			name: "last try",
			req:  Request{Token: "T", Retries: 1},
			want: "A program asks for the PIN of T.\nLast try before the PIN is blocked.",
		},
		{
			name: "many tries left are not worth a warning",
			req:  Request{Token: "T", Retries: 10, Attempt: 1},
			want: "A program asks for the PIN of T.",
		},
		{
			name: "escape sequences and bidi overrides are defused",
			req:  Request{Application: "\x1b]0;owned\x07ssh\u202e", Token: "T\n\rU", Reason: "\t"},
			want: "\ufffd]0;owned\ufffdssh\ufffd asks for the PIN of T\ufffd\ufffdU.\nReason: \ufffd.",
		},
		{
			name: "invalid UTF-8",
			req:  Request{Application: "a\xffb", Token: "T"},
			want: "a\ufffdb asks for the PIN of T.",
		},
		{
			name: "long names are cut",
			req:  Request{Application: strings.Repeat("x", 200), Token: "T"},
			want: strings.Repeat("x", maxFieldRunes) + "… asks for the PIN of T.",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.req.Description(); got != tt.want {
				t.Errorf("Description() =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestFunc(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		f       Func
		want    string
		wantErr error
	}{
		{"PIN", func(context.Context, Request) ([]byte, error) { return []byte("1234"), nil }, "1234", nil},
		{"empty is cancel", func(context.Context, Request) ([]byte, error) { return nil, nil }, "", ErrCancelled},
		{"error passes through", func(context.Context, Request) ([]byte, error) { return nil, boom }, "", boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p Prompter = tt.f
			pin, err := p.PIN(t.Context(), loginRequest)
			errorIs(t, err, tt.wantErr)
			if string(pin) != tt.want {
				t.Errorf("PIN = %q, want %q", pin, tt.want)
			}
		})
	}
}

func TestFuncPassesContextAndRequest(t *testing.T) {
	type key struct{}
	ctx := context.WithValue(t.Context(), key{}, "v")
	var got Request
	var gotV any
	f := Func(func(ctx context.Context, r Request) ([]byte, error) {
		got, gotV = r, ctx.Value(key{})
		return []byte("1"), nil
	})
	if _, err := f.PIN(ctx, loginRequest); err != nil {
		t.Fatal(err)
	}
	if got != loginRequest || gotV != "v" {
		t.Errorf("Func saw %+v and %v", got, gotV)
	}
}

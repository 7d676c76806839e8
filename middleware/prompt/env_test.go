package prompt

import (
	"context"
	"os"
	"strings"
	"testing"
)

func TestEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     Env
		value   string // of the variable env reads
		unset   bool   // rather than value
		req     Request
		cancel  bool
		want    string
		wantErr error
		wantMsg string
	}{
		{name: "default variable", value: "123456", req: loginRequest, want: "123456"},
		{name: "named variable", env: Env{Name: "MY_PIN"}, value: "9999", req: loginRequest, want: "9999"},
		{name: "zero attempt counts as first", value: "1", want: "1"},
		{name: "unset", unset: true, req: loginRequest, wantErr: errAny, wantMsg: "environment variable TOKENLAB_PIN is not set"},
		{name: "unset, named", env: Env{Name: "MY_PIN"}, unset: true, req: loginRequest, wantErr: errAny,
			wantMsg: "environment variable MY_PIN is not set"},
		{name: "empty", value: "", req: loginRequest, wantErr: ErrCancelled, wantMsg: "TOKENLAB_PIN is empty"},
		{name: "too long", value: strings.Repeat("1", 257), req: loginRequest, wantErr: errAny, wantMsg: "257 bytes"},
		{name: "second attempt is not retried", value: "123456", req: Request{Attempt: 2}, wantErr: ErrCancelled,
			wantMsg: "TOKENLAB_PIN holds a PIN the card refused"},
		{name: "cancelled context", value: "123456", req: loginRequest, cancel: true, wantErr: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := tt.env.Name
			if name == "" {
				name = DefaultEnvVar
			}
			t.Setenv(name, tt.value) // also restores the variable after the test
			if tt.unset {
				if err := os.Unsetenv(name); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if tt.cancel {
				cancel()
			}
			pin, err := tt.env.PIN(ctx, tt.req)
			errorIs(t, err, tt.wantErr)
			if err != nil && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not say %q", err, tt.wantMsg)
			}
			if string(pin) != tt.want {
				t.Errorf("PIN = %q, want %q", pin, tt.want)
			}
		})
	}
}

func TestEnvReturnsFreshSlices(t *testing.T) {
	t.Setenv(DefaultEnvVar, "2580")
	a, err := Env{}.PIN(t.Context(), loginRequest)
	if err != nil {
		t.Fatal(err)
	}
	clear(a)
	b, err := Env{}.PIN(t.Context(), loginRequest)
	if err != nil || string(b) != "2580" {
		t.Errorf("after wiping the first answer, the second is %q, %v", b, err)
	}
}

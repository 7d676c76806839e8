package prompt

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestFile(t *testing.T) {
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		req     Request
		cancel  bool
		want    string
		wantErr error
		wantMsg string
	}{
		{name: "one line", content: "123456\n", mode: 0o600, req: loginRequest, want: "123456"},
		{name: "no newline", content: "123456", mode: 0o600, req: loginRequest, want: "123456"},
		{name: "CRLF", content: "123456\r\n", mode: 0o600, req: loginRequest, want: "123456"},
		{name: "first line only", content: "1111\n2222\n", mode: 0o400, req: loginRequest, want: "1111"},
		{name: "spaces are kept", content: " a b \n", mode: 0o600, req: loginRequest, want: " a b "},
		{name: "longest PIN", content: strings.Repeat("9", 256) + "\r\n", mode: 0o600, req: loginRequest,
			want: strings.Repeat("9", 256)},
		{name: "too long", content: strings.Repeat("9", 257), mode: 0o600, req: loginRequest, wantErr: errAny,
			wantMsg: "first line is longer than the 256 bytes"},
		{name: "too long, no newline in sight", content: strings.Repeat("9", 1000), mode: 0o600, req: loginRequest,
			wantErr: errAny, wantMsg: "first line is longer"},
		{name: "empty file", content: "", mode: 0o600, req: loginRequest, wantErr: ErrCancelled, wantMsg: "first line is empty"},
		{name: "empty first line", content: "\n1234\n", mode: 0o600, req: loginRequest, wantErr: ErrCancelled},
		{name: "group-readable", content: "1234\n", mode: 0o640, req: loginRequest, wantErr: errAny,
			wantMsg: "has mode 0640 (-rw-r-----), open to group or others"},
		{name: "world-readable", content: "1234\n", mode: 0o604, req: loginRequest, wantErr: errAny, wantMsg: "has mode 0604"},
		{name: "group-writable", content: "1234\n", mode: 0o620, req: loginRequest, wantErr: errAny, wantMsg: "has mode 0620"},
		{name: "second attempt is not retried", content: "1234\n", mode: 0o600, req: Request{Attempt: 3}, wantErr: ErrCancelled,
			wantMsg: "holds a PIN the card refused; not trying it again (attempt 3)"},
		{name: "cancelled context", content: "1234\n", mode: 0o600, req: loginRequest, cancel: true, wantErr: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "pin")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil { // not subject to the umask
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if tt.cancel {
				cancel()
			}
			pin, err := File{Path: path}.PIN(ctx, tt.req)
			errorIs(t, err, tt.wantErr)
			if err != nil {
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("error %q does not say %q", err, tt.wantMsg)
				}
				if !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the file", err)
				}
			}
			if string(pin) != tt.want {
				t.Errorf("PIN = %q, want %q", pin, tt.want)
			}
		})
	}
}

func TestFileNotRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, wantMsg string
	}{
		{"directory", dir, "is not a regular file"},
		{"FIFO, which would block on open", fifo, "is not a regular file"},
		{"missing", filepath.Join(dir, "missing"), "no such file"},
		{"unnamed", "", "no PIN file named"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.path != "" {
				if err := os.Chmod(tt.path, 0o700); err != nil && !os.IsNotExist(err) {
					t.Fatal(err)
				}
			}
			_, err := File{Path: tt.path}.PIN(t.Context(), loginRequest)
			if err == nil || !strings.Contains(err.Error(), tt.wantMsg) || !strings.Contains(err.Error(), tt.path) {
				t.Errorf("error %v does not say %q about %q", err, tt.wantMsg, tt.path)
			}
		})
	}
}

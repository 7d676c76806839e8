package prompt

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAssuanEscape(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		limit  int
		option bool
		want   string
	}{
		{name: "plain", in: "PIN for YubiKey", limit: 100, want: "PIN for YubiKey"},
		{name: "percent, CR, LF", in: "100%\r\n", limit: 100, want: "100%25%0D%0A"},
		{name: "control bytes", in: "a\x00\x1b\x7fb", limit: 100, want: "a%00%1B%7Fb"},
		{name: "plus and space kept outside options", in: "a+b c", limit: 100, want: "a+b c"},
		{name: "plus and space escaped in options", in: "a+b c", limit: 100, option: true, want: "a%2Bb%20c"},
		{name: "UTF-8 kept", in: "Schlüssel", limit: 100, want: "Schlüssel"},
		{name: "invalid UTF-8 escaped", in: "a\xffb", limit: 100, want: "a%FFb"},
		{name: "cut before an escape", in: "ab%", limit: 4, want: "ab"},
		{name: "cut before a rune", in: "aü", limit: 2, want: "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(assuanEscape(nil, tt.in, tt.limit, tt.option)); got != tt.want {
				t.Errorf("assuanEscape(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestAssuanUnescape(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "12%2534", want: "12%34"},
		{in: "%0d%0A", want: "\r\n"},
		{in: "a+b", want: "a+b"},
		{in: "", want: ""},
		{in: "%", wantErr: true},
		{in: "%2", wantErr: true},
		{in: "%zz", wantErr: true},
	}
	for _, tt := range tests {
		got, err := assuanUnescape(nil, []byte(tt.in))
		if (err != nil) != tt.wantErr || err == nil && string(got) != tt.want {
			t.Errorf("assuanUnescape(%q) = %q, %v; want %q (error %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseAssuanResponse(t *testing.T) {
	tests := []struct {
		line    string
		kind    assuanKind
		rest    string
		code    uint32
		cancel  bool
		wantErr bool
	}{
		{line: "OK", kind: assuanOK},
		{line: "OK Pleased to meet you", kind: assuanOK, rest: "Pleased to meet you"},
		{line: "OK\r", kind: assuanOK},
		{line: "D 12%2534", kind: assuanData, rest: "12%2534"},
		{line: "S PINENTRY_LAUNCHED 1", kind: assuanStatus, rest: "PINENTRY_LAUNCHED 1"},
		{line: "# comment", kind: assuanComment},
		{line: "INQUIRE X", kind: assuanInquire, rest: "X"},
		{line: "ERR 83886179 Operation cancelled <Pinentry>", kind: assuanErr, rest: "Operation cancelled <Pinentry>", code: 83886179, cancel: true},
		{line: "ERR 83886142", kind: assuanErr, code: 83886142},
		{line: "ERR 4294967296 too big", wantErr: true},
		{line: "ERR -1", wantErr: true},
		{line: "ERR", wantErr: true},
		{line: "OKAY", wantErr: true},
		{line: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseAssuanResponse([]byte(tt.line))
		if tt.wantErr {
			if err == nil {
				t.Errorf("parseAssuanResponse(%q) = %+v, want an error", tt.line, got)
			}
			continue
		}
		if err != nil || got.kind != tt.kind || string(got.rest) != tt.rest || got.code != tt.code || got.cancelled() != tt.cancel {
			t.Errorf("parseAssuanResponse(%q) = %+v (cancelled %v), %v", tt.line, got, got.cancelled(), err)
		}
	}
}

// FuzzAssuanEscape checks that escaping stays within its limit, produces a valid Assuan
// argument, and that unescaping gives back a prefix of the input.
func FuzzAssuanEscape(f *testing.F) {
	for _, s := range []string{"", "12%34", "line\nbreak\r", "Schlüssel", "a\xffb", "+ +", strings.Repeat("%", 400)} {
		f.Add(s, 30, false)
		f.Add(s, 1000, true)
	}
	f.Fuzz(func(t *testing.T, s string, limit int, option bool) {
		if limit < 0 || limit > 4096 {
			return
		}
		esc := assuanEscape(nil, s, limit, option)
		if len(esc) > limit {
			t.Fatalf("escaped to %d bytes, over the limit of %d", len(esc), limit)
		}
		if bytes.ContainsAny(esc, "\r\n\x00") {
			t.Fatalf("escaped text %q contains a line break or NUL", esc)
		}
		back, err := assuanUnescape(nil, esc)
		if err != nil {
			t.Fatalf("unescaping %q: %v", esc, err)
		}
		if !strings.HasPrefix(s, string(back)) {
			t.Fatalf("round trip of %q gave %q, not a prefix", s, back)
		}
		if utf8.ValidString(s) && !utf8.Valid(back) {
			t.Fatalf("cut %q in the middle of a rune: %q", s, back)
		}
	})
}

// FuzzParseAssuanResponse feeds arbitrary pinentry output lines to the parser and the decoder.
func FuzzParseAssuanResponse(f *testing.F) {
	for _, s := range []string{
		"OK Pleased to meet you", "D 12%2534", "ERR 83886179 Operation cancelled <Pinentry>",
		"S PINENTRY_LAUNCHED 1234 tty 1.2.1 - xterm - - 0/0 0", "# comment", "INQUIRE PINENTRY_LAUNCHED", "D %", "ERR x",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		rsp, err := parseAssuanResponse(line)
		if err != nil {
			return
		}
		if rsp.kind == assuanData {
			if out, err := assuanUnescape(nil, rsp.rest); err == nil && len(out) > len(rsp.rest) {
				t.Fatalf("decoded %d bytes from %d", len(out), len(rsp.rest))
			}
		}
	})
}

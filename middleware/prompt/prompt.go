// Package prompt asks a person, or a script standing in for one, for a PIN.
package prompt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrCancelled is returned, possibly wrapped, when the person declines to give a PIN: Ctrl-C,
// Ctrl-D, Escape, the Cancel button, or an empty answer.
var ErrCancelled = errors.New("prompt: PIN entry cancelled")

// Request says what PIN is wanted and why, so the person knows what they are approving.
type Request struct {
	Application string // who asks, e.g. "ssh", "ike", "pkcs11-tool (pid 123)"
	Token       string // e.g. "YubiKey 12345678"
	Slot        string // "9a", "9c", or "" for a login
	Reason      string // "login", "signature with a PIN-always key (9c)", "PIN cache expired"

	// Retries is the number of tries left, or -1 if unknown. Zero counts as unknown too: a card
	// with no tries left is blocked and never gets as far as a prompt.
	Retries int

	// Attempt is 1 for the first prompt, 2 after a wrong PIN, and so on; 0 counts as 1.
	Attempt int
}

// Prompter asks for a PIN.
//
// PIN returns a fresh slice that the caller owns and should wipe (clear) when done; no
// implementation keeps a reference to it. It returns ErrCancelled (possibly wrapped) when the
// person declines or answers with nothing, and an error wrapping ctx.Err() when ctx ends first.
// A Prompter does not judge the PIN's format: that is the card's business.
type Prompter interface {
	PIN(ctx context.Context, r Request) ([]byte, error)
}

// Func adapts a function to a Prompter. An empty answer without an error becomes ErrCancelled,
// as for every other Prompter.
type Func func(ctx context.Context, r Request) ([]byte, error)

// PIN calls f.
func (f Func) PIN(ctx context.Context, r Request) ([]byte, error) {
	pin, err := f(ctx, r)
	if err == nil && len(pin) == 0 {
		return nil, ErrCancelled
	}
	return pin, err
}

// maxPINLen bounds every answer. PIV PINs are 6 to 8 bytes and passphrase-style PINs of other
// tokens stay far below this.
const maxPINLen = 256

// maxFieldRunes bounds each Request field as shown to the person, so that a hostile program name
// cannot push the rest of the prompt off the screen.
const maxFieldRunes = 128

// lowRetries is the number of tries left at which the person is warned.
const lowRetries = 2

// Description is the text shown to the person: who asks for which token's PIN and why, followed
// by a warning line when the last PIN was wrong or few tries are left. Fields are stripped of
// control and formatting characters, since Application may come from another process's name
// and would otherwise reach the terminal as escape sequences.
func (r Request) Description() string {
	d := r.description()
	if w := r.warning(); w != "" {
		d += "\n" + w
	}
	return d
}

// title is the short heading a graphical pinentry puts in its window title.
func (r Request) title() string {
	if r.Token == "" {
		return "PIN"
	}
	return "PIN for " + printable(r.Token)
}

// description says who asks and why, without the warning.
func (r Request) description() string {
	var b strings.Builder
	app := printable(r.Application)
	if app == "" {
		app = "A program"
	}
	token := printable(r.Token)
	if token == "" {
		token = "the token"
	}
	fmt.Fprintf(&b, "%s asks for the PIN of %s", app, token)
	if slot := printable(r.Slot); slot != "" {
		fmt.Fprintf(&b, " (key slot %s)", slot)
	}
	b.WriteString(".")
	if reason := printable(r.Reason); reason != "" {
		fmt.Fprintf(&b, "\nReason: %s.", strings.TrimSuffix(reason, "."))
	}
	return b.String()
}

// warning is "" or one line telling the person that the last PIN was wrong or that few tries
// are left.
func (r Request) warning() string {
	var parts []string
	if r.Attempt > 1 {
		parts = append(parts, fmt.Sprintf("Wrong PIN (this is attempt %d).", r.Attempt))
	}
	switch {
	case r.Retries == 1:
		parts = append(parts, "Last try before the PIN is blocked.")
	case r.Retries > 1 && r.Retries <= lowRetries:
		parts = append(parts, fmt.Sprintf("%d tries left before the PIN is blocked.", r.Retries))
	}
	return strings.Join(parts, " ")
}

// printable returns s with every rune that is not printable (control characters, escape
// sequences, bidirectional overrides, invalid UTF-8) replaced by U+FFFD, cut to maxFieldRunes.
func printable(s string) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n == maxFieldRunes {
			b.WriteRune('…')
			break
		}
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			r = utf8.RuneError
		}
		b.WriteRune(r)
		n++
	}
	return strings.TrimSpace(b.String())
}

// firstAttempt reports whether r is the first prompt for this PIN. Static sources (Env, File)
// answer only first prompts: repeating an answer the card has just refused would burn a try.
func (r Request) firstAttempt() bool { return r.Attempt <= 1 }

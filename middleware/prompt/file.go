package prompt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// File answers with the first line of a file, for scripts and CI. Like ssh with private keys,
// it refuses a file that group or others may read, write or execute, and like Env it answers
// only the first prompt of a Request sequence.
type File struct {
	// Path is the file to read.
	Path string
}

// PIN returns the file's first line without its trailing CR/LF. An empty first line is
// ErrCancelled. Only regular files are read, so a FIFO cannot make PIN wait outside ctx.
func (f File) PIN(ctx context.Context, r Request) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("prompt: PIN file %s: %w", f.Path, err)
	}
	if !r.firstAttempt() {
		return nil, fmt.Errorf("prompt: PIN file %s holds a PIN the card refused; not trying it again (attempt %d): %w",
			f.Path, r.Attempt, ErrCancelled)
	}
	if f.Path == "" {
		return nil, errors.New("prompt: no PIN file named")
	}
	// Check before opening (opening a FIFO waits for a writer) and again on the open file, which
	// is the one actually read.
	if fi, err := os.Stat(f.Path); err != nil {
		return nil, fmt.Errorf("prompt: PIN file: %w", err)
	} else if err := f.check(fi); err != nil {
		return nil, err
	}
	fh, err := os.Open(f.Path)
	if err != nil {
		return nil, fmt.Errorf("prompt: PIN file: %w", err)
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("prompt: PIN file: %w", err)
	}
	if err := f.check(fi); err != nil {
		return nil, err
	}

	buf := make([]byte, maxPINLen+2) // room for the longest PIN and its CR LF
	defer clear(buf)
	n, err := io.ReadFull(fh, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("prompt: PIN file: %w", err)
	}
	line, _, found := bytes.Cut(buf[:n], []byte("\n"))
	if !found && n == len(buf) {
		return nil, fmt.Errorf("prompt: PIN file %s: first line is longer than the %d bytes a PIN may have", f.Path, maxPINLen)
	}
	line = bytes.TrimRight(line, "\r")
	if len(line) > maxPINLen {
		return nil, fmt.Errorf("prompt: PIN file %s: first line is longer than the %d bytes a PIN may have", f.Path, maxPINLen)
	}
	if len(line) == 0 {
		return nil, fmt.Errorf("prompt: PIN file %s: first line is empty: %w", f.Path, ErrCancelled)
	}
	return bytes.Clone(line), nil
}

// check refuses anything but a regular file closed to group and others.
func (f File) check(fi os.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("prompt: PIN file %s is not a regular file (mode %s)", f.Path, fi.Mode())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("prompt: PIN file %s has mode %#o (%s), open to group or others; it must be 0600 or stricter",
			f.Path, perm, fi.Mode())
	}
	return nil
}

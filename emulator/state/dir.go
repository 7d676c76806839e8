// Package state keeps one card's persistent content in a directory: atomic replace with fsync of
// the file and the directory, an exclusive lock, a versioned schema, and files only the owner can read.
package state

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// File names inside a state directory.
const (
	CardFile = "card.json"
	LockFile = "lock"
)

// maxFileSize bounds what Read accepts; a card holds at most a few hundred kilobytes.
const maxFileSize = 16 << 20

var (
	// ErrLocked is returned when another process holds the directory.
	ErrLocked = errors.New("in use by another process")
	// ErrNoCard is returned when the directory holds no card.
	ErrNoCard = errors.New("no card")
	// ErrExists is returned by Create when the directory already holds a card.
	ErrExists = errors.New("already holds a card")
)

// Dir is a locked state directory. Its methods are not safe for concurrent use; the card
// serializes its commands and so its saves.
type Dir struct {
	path     string
	lock     *os.File
	counters *os.File // CountersFile, open for writing once it exists
	seq      uint64   // sequence number of the newest counters record

	// The directory holds no counters of its card yet, so the next Save writes the counters
	// file whole, before the document: created is a new card (whatever card was there before
	// goes first), schema1 a document of an older schema, which that Save migrates.
	created, schema1 bool
}

// Create makes dir (mode 0700) if needed and locks it for a new card, which the caller then
// writes with Save. It fails with ErrExists when dir already holds a card, unless replace is set.
func Create(dir string, replace bool) (*Dir, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if err := syncDir(filepath.Dir(filepath.Clean(dir))); err != nil {
		return nil, err
	}
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	d, err := lock(dir)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, CardFile)); err == nil && !replace {
		d.Close()
		return nil, fmt.Errorf("state: %s: %w (use --force to replace it)", dir, ErrExists)
	}
	// The old card's files are not read: replacing a damaged card must work.
	d.created = true
	return d, nil
}

// Open locks an existing state directory and loads its card.
func Open(dir string) (*Dir, *Card, error) {
	if err := checkDir(dir); err != nil {
		return nil, nil, err
	}
	d, err := lock(dir)
	if err != nil {
		return nil, nil, err
	}
	c, cr, err := read(dir)
	if err != nil {
		d.Close()
		return nil, nil, err
	}
	if cr != nil {
		d.seq = cr.seq
	}
	d.schema1 = c.Schema < SchemaVersion
	return d, c, nil
}

// Migrating reports whether the card was loaded from a document of an older schema, which the
// next Save rewrites. Until then only Save may write: SaveCounters refuses.
func (d *Dir) Migrating() bool { return d.schema1 }

// Read loads the card of dir, with its retry counters, without taking the lock. Saves replace
// the document atomically and write the counters one record at a time, so Read sees the
// previous or the next content of each, never a mix.
func Read(dir string) (*Card, error) {
	c, _, err := read(dir)
	return c, err
}

func read(dir string) (*Card, *countersRecord, error) {
	c, err := readDocument(dir)
	if err != nil {
		return nil, nil, err
	}
	cr, err := applyCounters(dir, c)
	if err != nil {
		return nil, nil, err
	}
	return c, cr, nil
}

func readDocument(dir string) (*Card, error) {
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	name := filepath.Join(dir, CardFile)
	f, err := os.OpenFile(name, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("state: %s: %w (create one with: tokenlab card init --state %s)", dir, ErrNoCard, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("state: %s: permissions %04o are too open for a file holding private keys (chmod 600 %s)", name, perm, name)
	}
	if err := ownedByUs(name, fi); err != nil {
		return nil, err
	}
	if fi.Size() > maxFileSize {
		return nil, fmt.Errorf("state: %s: %d bytes is larger than any card (%d)", name, fi.Size(), maxFileSize)
	}
	b := make([]byte, fi.Size())
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("state: %s: %w", name, err)
	}
	c, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("state: %s: %w", name, err)
	}
	return c, nil
}

// Decode parses and structurally checks a card document. It rejects unknown fields, trailing
// data, a missing schema version and one newer than SchemaVersion.
func Decode(b []byte) (*Card, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, errors.New("empty file")
	}
	var head struct {
		Schema json.RawMessage `json:"schema"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, jsonError(b, err)
	}
	if head.Schema == nil {
		return nil, errors.New("no schema version")
	}
	v, err := strconv.Atoi(string(head.Schema))
	if err != nil || v < 1 {
		return nil, fmt.Errorf("schema: %s is not a schema version", head.Schema)
	}
	if v > SchemaVersion {
		return nil, fmt.Errorf("schema version %d is newer than this binary (%d)", v, SchemaVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	c := new(Card)
	// Trailing data was already refused by the first pass.
	if err := dec.Decode(c); err != nil {
		return nil, jsonError(b, err)
	}
	return c, nil
}

// jsonError names the line and, for type errors, the field.
func jsonError(b []byte, err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn) && strings.Contains(syn.Error(), "after top-level value"):
		return fmt.Errorf("line %d: data after the card document", lineOf(b, int(syn.Offset)))
	case errors.As(err, &syn):
		return fmt.Errorf("line %d: %v", lineOf(b, int(syn.Offset)), syn)
	case errors.As(err, &typ):
		return fmt.Errorf("line %d: %s: a JSON %s where %s belongs", lineOf(b, int(typ.Offset)), typ.Field, typ.Value, jsonKind(typ.Type))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("file ends in the middle of the document (truncated?)")
	}
	if s := err.Error(); strings.HasPrefix(s, "json: unknown field ") {
		return fmt.Errorf("unknown field %s", strings.TrimPrefix(s, "json: unknown field "))
	}
	return err
}

// jsonKind names what a Go type looks like in JSON.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		if t.Implements(reflect.TypeFor[encoding.TextUnmarshaler]()) || reflect.PointerTo(t).Implements(reflect.TypeFor[encoding.TextUnmarshaler]()) {
			return "a string"
		}
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return fmt.Sprintf("an integer (%v)", t.Kind())
	}
	return "a " + t.String()
}

func lineOf(b []byte, off int) int {
	off = min(max(off, 0), len(b))
	return bytes.Count(b[:off], []byte{'\n'}) + 1
}

// Save replaces the card document atomically and writes its retry counters (CountersFile).
// When Save returns nil the content survives a crash.
//
// The order matters. Usually the document goes first: a crash between the two leaves the new
// document with the counters before it, which are never higher than the new ones would be (a
// change that raises a counter, such as an unblock, comes with the document). The first Save of
// a new card, or of a card loaded from a schema 1 document, writes the counters first, so that
// a schema 2 document never stands without its counters.
func (d *Dir) Save(c *Card) error {
	c.Schema = SchemaVersion
	ctr := Counters{PIN: c.PIV.PIN.Retries, PUK: c.PIV.PUK.Retries}
	if ctr.PIN < 0 || ctr.PIN > 255 || ctr.PUK < 0 || ctr.PUK > 255 {
		return fmt.Errorf("state: counters %+v out of range", ctr)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	b = append(b, '\n')
	if !d.created && !d.schema1 {
		if err := replaceFile(d.path, CardFile, b); err != nil {
			return err
		}
		return d.SaveCounters(c.Serial, ctr)
	}
	if d.created {
		// The card being replaced goes first: its document must not meet the new counters.
		if err := os.Remove(filepath.Join(d.path, CardFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("state: %w", err)
		}
		if err := syncDir(d.path); err != nil {
			return err
		}
	}
	if err := d.replaceCounters(record{seq: 1, serial: c.Serial, c: ctr}); err != nil {
		return err
	}
	if err := replaceFile(d.path, CardFile, b); err != nil {
		return err
	}
	d.created, d.schema1 = false, false
	return nil
}

// replaceFile replaces dir/name with content b atomically: write a temporary file (0600),
// fsync it, rename it over the old one, fsync the directory.
func replaceFile(dir, name string, b []byte) error {
	f, err := os.CreateTemp(dir, name+".tmp-*")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// CreateTemp already uses 0600; Chmod guards against an unusual umask-less filesystem.
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	ok = true
	return syncDir(dir)
}

// Close releases the lock.
func (d *Dir) Close() error {
	d.closeCounters()
	if d.lock == nil {
		return nil
	}
	err := d.lock.Close() // closing the descriptor drops the flock
	d.lock = nil
	return err
}

// checkDir checks that dir is a directory that only we can change: a card whose PIN and keys
// someone else could plant or swap is not a card.
func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state: %s: no such directory (create one with: tokenlab card init --state %s)", dir, dir)
	}
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("state: %s: not a directory", dir)
	}
	if err := ownedByUs(dir, fi); err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("state: %s: writable by others (mode %04o); chmod 700 %s", dir, perm, dir)
	}
	return nil
}

func ownedByUs(name string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if uid := os.Geteuid(); int(st.Uid) != uid {
		return fmt.Errorf("state: %s: owned by uid %d, not by us (uid %d)", name, st.Uid, uid)
	}
	return nil
}

// removeStale deletes temporary files a crash left behind; they hold private keys. The caller
// holds the lock, so no save is in progress.
func removeStale(dir string) {
	stale, _ := filepath.Glob(filepath.Join(dir, CardFile+".tmp-*"))
	counters, _ := filepath.Glob(filepath.Join(dir, CountersFile+".tmp-*"))
	for _, f := range append(stale, counters...) {
		os.Remove(f)
	}
}

// lock takes an exclusive, non-blocking flock on dir/lock and records our pid in it, so that the
// next process can say who holds the card.
func lock(dir string) (*Dir, error) {
	name := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			holder := ""
			if b, rerr := os.ReadFile(name); rerr == nil {
				if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
					holder = fmt.Sprintf(" (pid %d)", pid)
				}
			}
			return nil, fmt.Errorf("state: %s: %w%s", dir, ErrLocked, holder)
		}
		return nil, fmt.Errorf("state: lock %s: %w", name, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	removeStale(dir)
	return &Dir{path: dir, lock: f}, nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("state: fsync %s: %w", dir, err)
	}
	return nil
}

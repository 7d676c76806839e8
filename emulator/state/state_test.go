package state

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sample() *Card {
	return &Card{Serial: 7, Version: "5.7.1", ATR: Hex{0x3B, 0x00}, PIV: PIV{
		PIN:     Credential{Value: Hex("123456\xff\xff"), Retries: 3, MaxRetries: 3},
		Keys:    []Key{{Slot: "9a", Algorithm: "eccp256", Private: Base64{1, 2, 3}}},
		Objects: []Object{{Tag: "5fc102", Value: Base64{0x30, 0x00}}},
	}}
}

func TestCreateSaveOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "card")
	d, err := Create(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Save(sample()); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, filepath.Join(dir, CardFile), filepath.Join(dir, CountersFile), filepath.Join(dir, LockFile)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v; only the owner may read it", p, fi.Mode().Perm())
		}
	}
	// A second process cannot take the card while the first holds it.
	if _, _, err := Open(dir); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "pid") {
		t.Errorf("second Open: %v, want ErrLocked naming the pid", err)
	}
	if _, err := Create(dir, true); !errors.Is(err, ErrLocked) {
		t.Errorf("Create over a held card: %v", err)
	}
	// Reading needs no lock.
	c, err := Read(dir)
	if err != nil || c.Serial != 7 || c.Schema != SchemaVersion || string(c.PIV.Keys[0].Private) != "\x01\x02\x03" {
		t.Fatalf("Read = %+v, %v", c, err)
	}
	d.Close()
	if _, err := Create(dir, false); !errors.Is(err, ErrExists) {
		t.Errorf("Create over an existing card: %v, want ErrExists", err)
	}
	d, c, err = Open(dir)
	if err != nil || c.Version != "5.7.1" {
		t.Fatalf("Open after Close: %+v, %v", c, err)
	}
	d.Close()
	if entries, _ := os.ReadDir(dir); len(entries) != 3 {
		t.Errorf("state directory holds %d files, want card.json, counters and lock (no temporary files left)", len(entries))
	}
}

func TestReadErrors(t *testing.T) {
	write := func(t *testing.T, content string, mode os.FileMode) string {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, CardFile), []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	tests := []struct {
		name, content string
		mode          os.FileMode
		want          string
	}{
		{"empty", "", 0o600, "empty file"},
		{"truncated", `{"schema": 1, "serial": 7,`, 0o600, "truncated"},
		{"not JSON", "card", 0o600, "line 1"},
		{"newer schema", `{"schema": 3}`, 0o600, "schema version 3 is newer than this binary (2)"},
		{"no schema", `{"serial": 7}`, 0o600, "no schema version"},
		{"bad schema", `{"schema": "one"}`, 0o600, "not a schema version"},
		{"unknown field", `{"schema": 1, "colour": "blue"}`, 0o600, `unknown field "colour"`},
		{"wrong type", "{\"schema\": 1,\n \"serial\": \"seven\"}", 0o600, "line 2: serial: a JSON string where an integer (uint32) belongs"},
		{"bad hex", `{"schema": 1, "atr": "zz"}`, 0o600, "not hex"},
		{"trailing data", `{"schema": 1} {}`, 0o600, "data after the card document"},
		{"readable by others", `{"schema": 1}`, 0o644, "too open"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := write(t, tt.content, tt.mode)
			_, err := Read(dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), filepath.Join(dir, CardFile)) {
				t.Errorf("Read: %v\nwant an error naming the file and saying %q", err, tt.want)
			}
		})
	}
	if _, err := Read(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "no such directory") {
		t.Errorf("missing directory: %v", err)
	}
	if _, err := Read(t.TempDir()); !errors.Is(err, ErrNoCard) {
		t.Errorf("empty directory: %v", err)
	}
}

// A failed save leaves the previous content.
func TestSaveFailureKeepsOldContent(t *testing.T) {
	dir := t.TempDir()
	d, err := Create(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Save(sample()); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(dir, 0o700)
	next := sample()
	next.Serial = 8
	if err := d.Save(next); err == nil && os.Geteuid() != 0 {
		t.Fatal("save into a read-only directory succeeded")
	}
	if os.Geteuid() == 0 {
		return // root writes anyway; the rename is atomic either way
	}
	c, err := Read(dir)
	if err != nil || c.Serial != 7 {
		t.Errorf("after a failed save: %+v, %v", c, err)
	}
}

func FuzzDecode(f *testing.F) {
	b, _ := os.ReadFile("testdata/card.json")
	f.Add(b)
	f.Add([]byte(`{"schema":1}`))
	f.Add([]byte(`{"schema":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			if c != nil {
				t.Fatal("error with a card")
			}
			return
		}
		if c.Schema < 1 || c.Schema > SchemaVersion {
			t.Fatalf("accepted schema %d", c.Schema)
		}
	})
}

func TestDirectoryTrust(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "card")
	d, err := Create(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	d.Save(sample())
	d.Close()

	// A directory others can write to is refused: they could swap the card.
	os.Chmod(dir, 0o777)
	if _, err := Read(dir); err == nil || !strings.Contains(err.Error(), "writable by others") {
		t.Errorf("world-writable directory: %v", err)
	}
	os.Chmod(dir, 0o700)

	// A planted lock symlink is not followed.
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("keep me"), 0o600)
	os.Remove(filepath.Join(dir, LockFile))
	os.Symlink(victim, filepath.Join(dir, LockFile))
	if _, _, err := Open(dir); err == nil {
		t.Error("opened through a lock symlink")
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me" {
		t.Errorf("the lock symlink's target was written: %q", b)
	}
	os.Remove(filepath.Join(dir, LockFile))

	// Temporary files a crash left behind are removed when the card is opened.
	tmp := filepath.Join(dir, CardFile+".tmp-123")
	os.WriteFile(tmp, []byte("private"), 0o600)
	d, _, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if _, err := os.Stat(tmp); err == nil {
		t.Error("stale temporary file left in place")
	}

	// Create on an existing directory tightens its mode.
	loose := filepath.Join(t.TempDir(), "loose")
	os.Mkdir(loose, 0o750)
	if d, err := Create(loose, false); err != nil {
		t.Fatal(err)
	} else {
		d.Close()
	}
	if fi, _ := os.Stat(loose); fi.Mode().Perm() != 0o700 {
		t.Errorf("state directory mode %v after Create", fi.Mode().Perm())
	}
}

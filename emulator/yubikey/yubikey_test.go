package yubikey

import (
	"context"
	"crypto"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"tokenlab/emulator/piv"
	"tokenlab/emulator/state"
	"tokenlab/middleware/pivclient"
)

func TestInitOpenPersists(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "card")
	d, err := Init(dir, Options{Serial: 42, Version: piv.Version{Major: 5, Minor: 4, Patch: 3}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if d.Serial() != 42 || d.Version().String() != "5.4.3" {
		t.Errorf("serial %d version %v", d.Serial(), d.Version())
	}
	c := pivclient.New(d.Card)
	c.Select(ctx)
	// Before 5.7 the default management key is 3DES.
	if err := c.AuthenticateManagementKey(ctx, pivclient.AlgTDES, piv.DefaultManagementKey); err != nil {
		t.Fatal(err)
	}
	pub, err := c.GenerateKey(ctx, 0x9A, pivclient.AlgECCP256, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	c.VerifyPIN(ctx, []byte("000000"))
	if _, err := Open(dir, nil); err == nil {
		t.Error("opened a card another holder has")
	}
	d.Close()

	d, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	st := d.PIV.Status()
	if st.PINRetries != 2 || len(st.Slots) != 2 || st.Slots[0].Slot != piv.SlotAuthentication {
		t.Fatalf("after reopening: %+v", st)
	}
	c = pivclient.New(d.Card)
	c.Select(ctx)
	m, err := c.GetMetadata(ctx, 0x9A)
	if err != nil || !m.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
		t.Errorf("key after reopening: %v", err)
	}
	if _, err := Init(dir, Options{}, true); err == nil {
		t.Error("Init replaced a card that is in use")
	}
}

func TestNewDefaults(t *testing.T) {
	d, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Serial() < 10_000_000 || d.Serial() > 99_999_999 || d.Version() != DefaultVersion {
		t.Errorf("serial %d version %v", d.Serial(), d.Version())
	}
	if st := d.PIV.Status(); st.ManagementKeyAlgorithm != piv.AES192 || !st.ManagementKeyDefault {
		t.Errorf("5.7 default management key: %v", st.ManagementKeyAlgorithm)
	}
	if _, err := New(Options{ATR: make([]byte, 34)}); err == nil {
		t.Error("34-byte ATR accepted")
	}
	if _, err := New(Options{Version: piv.Version{Major: 5, Minor: 2}, ManagementKeyAlgorithm: piv.AES128}); err == nil {
		t.Error("AES management key on 5.2 accepted")
	}
}

// A state file that parses but says something impossible is an error naming the file and field.
func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	d, err := Init(dir, Options{Serial: 9}, true)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	good, _ := os.ReadFile(filepath.Join(dir, state.CardFile))
	tests := []struct {
		name  string
		edit  func(c *state.Card)
		field string
	}{
		{"version", func(c *state.Card) { c.Version = "5.7" }, "version"},
		// Another serial makes the counters file another card's; that file is named.
		{"serial", func(c *state.Card) { c.Serial = 0 }, "not of card 0"},
		{"atr", func(c *state.Card) { c.ATR = nil }, "atr"},
		{"pin retries", func(c *state.Card) { c.PIV.PIN.Retries = 9 }, "piv.pin.retries"},
		{"pin value", func(c *state.Card) { c.PIV.PIN.Value = c.PIV.PIN.Value[:4] }, "piv.pin.value"},
		{"puk max", func(c *state.Card) { c.PIV.PUK.MaxRetries = 0 }, "piv.puk.max_retries"},
		{"management algorithm", func(c *state.Card) { c.PIV.ManagementKey.Algorithm = "des" }, "piv.management_key.algorithm"},
		{"management key length", func(c *state.Card) { c.PIV.ManagementKey.Key = c.PIV.ManagementKey.Key[:8] }, "piv.management_key.key"},
		{"slot", func(c *state.Card) { c.PIV.Keys[0].Slot = "9b" }, "piv.keys[0].slot"},
		{"pin policy", func(c *state.Card) { c.PIV.Keys[0].PINPolicy = "sometimes" }, "piv.keys[0].pin_policy"},
		{"origin", func(c *state.Card) { c.PIV.Keys[0].Origin = "found" }, "piv.keys[0].origin"},
		{"store", func(c *state.Card) { c.PIV.Keys[0].Store = "tpm" }, "piv.keys[0].store"},
		{"private key", func(c *state.Card) { c.PIV.Keys[0].Private = []byte("nope") }, "piv.keys[0].private"},
		{"key algorithm mismatch", func(c *state.Card) { c.PIV.Keys[0].Algorithm = "eccp384" }, "piv.keys[0].private"},
		{"object tag", func(c *state.Card) { c.PIV.Objects[0].Tag = "5fc1" + "0201" }, "piv.objects[0].tag"},
		{"duplicate object", func(c *state.Card) { c.PIV.Objects = append(c.PIV.Objects, c.PIV.Objects[0]) }, "appears twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c state.Card
			if err := json.Unmarshal(good, &c); err != nil {
				t.Fatal(err)
			}
			tt.edit(&c)
			b, _ := json.Marshal(&c)
			if err := os.WriteFile(filepath.Join(dir, state.CardFile), b, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Read(dir)
			file := state.CardFile
			if tt.name == "serial" {
				file = state.CountersFile
			}
			if err == nil || !strings.Contains(err.Error(), tt.field) || !strings.Contains(err.Error(), file) {
				t.Errorf("Read: %v\nwant an error naming %s and %q", err, file, tt.field)
			}
			if _, err := Open(dir, nil); err == nil {
				t.Error("Open accepted what Read rejected")
			}
		})
	}
}

// FuzzLoad: any state document that decodes either loads into a working card or is rejected
// with an error; loading never panics.
func FuzzLoad(f *testing.F) {
	b, err := os.ReadFile("../state/testdata/card.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		doc, err := state.Decode(b)
		if err != nil {
			return
		}
		d, err := load(doc, nil, nil)
		if err != nil {
			return
		}
		c := pivclient.New(d.Card)
		c.Select(context.Background())
		c.PINStatus(context.Background())
		_ = d.PIV.Status()
	})
}

// A save that fails after the document was replaced (here: the counters file cannot be
// opened) leaves the change on disk. The card must not go on with the old state in memory:
// it stops, and the state directory decides what the card is after a restart.
func TestFailedSaveStopsTheCard(t *testing.T) {
	ctx := context.Background()
	dir := initCard(t, Options{})
	d, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	var told []error
	d.OnFail(func(err error) { told = append(told, err) })
	ctr := filepath.Join(dir, state.CountersFile)
	os.Rename(ctr, ctr+".saved")
	os.Symlink("elsewhere", ctr) // refused (O_NOFOLLOW) when the save opens it
	c := pivclient.New(d.Card)
	c.Select(ctx)
	if err := c.AuthenticateManagementKey(ctx, pivclient.AlgAES192, piv.DefaultManagementKey); err != nil {
		t.Fatal(err)
	}
	newKey := []byte("0123456789abcdef01234567")
	if err := c.SetManagementKey(ctx, pivclient.AlgAES192, newKey, false); err == nil {
		t.Fatal("SET MANAGEMENT KEY succeeded with a failing save")
	}
	if d.Failed() == nil {
		t.Error("the card does not report its failure")
	}
	c.Select(ctx) // a second command of the stopped card: OnFail is told once
	if len(told) != 1 || told[0] != d.Failed() {
		t.Errorf("OnFail was told %v, want once the error Failed reports (%v)", told, d.Failed())
	}
	if err := c.AuthenticateManagementKey(ctx, pivclient.AlgAES192, piv.DefaultManagementKey); err == nil {
		t.Error("the old management key still works in memory after the failed save")
	}
	d.Close()
	os.Remove(ctr)
	os.Rename(ctr+".saved", ctr)
	if d, err = Open(dir, nil); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c = pivclient.New(d.Card)
	c.Select(ctx)
	if err := c.AuthenticateManagementKey(ctx, pivclient.AlgAES192, newKey); err != nil {
		t.Errorf("after a restart the card is what its state directory holds: %v", err)
	}
}

// A card of schema 1 (an older binary's) is migrated when it is opened: a schema 2 document and
// its counters file, the counters first. Its counters then never change in the counters file
// alone beside a document an older binary would read as it is.
func TestOpenMigratesSchemaOne(t *testing.T) {
	ctx := context.Background()
	dir := initCard(t, Options{})
	doc := filepath.Join(dir, state.CardFile)
	b, _ := os.ReadFile(doc)
	os.WriteFile(doc, []byte(strings.Replace(string(b), `"schema": 2`, `"schema": 1`, 1)), 0o600)
	os.Remove(filepath.Join(dir, state.CountersFile))

	d, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := pivclient.New(d.Card)
	c.Select(ctx)
	c.VerifyPIN(ctx, []byte("000000"))
	c.VerifyPIN(ctx, []byte("000000"))
	d.Close()
	var onDisk struct {
		Schema int `json:"schema"`
	}
	b, _ = os.ReadFile(doc)
	json.Unmarshal(b, &onDisk)
	if onDisk.Schema != state.SchemaVersion {
		t.Errorf("after opening and two VERIFYs the document is of schema %d, want %d", onDisk.Schema, state.SchemaVersion)
	}
	if st, err := Read(dir); err != nil || st.PIV.Status().PINRetries != 1 {
		t.Errorf("after two wrong PINs: %v", err)
	}
}

// card init --force replaces a card whose counters file is damaged, without reading it.
func TestInitForceOverDamagedCounters(t *testing.T) {
	dir := initCard(t, Options{Serial: 1})
	os.WriteFile(filepath.Join(dir, state.CountersFile), []byte("junk"), 0o600)
	if _, err := Open(dir, nil); err == nil || !strings.Contains(err.Error(), state.CountersFile) {
		t.Errorf("opening a card with damaged counters: %v, want an error naming the file", err)
	}
	d, err := Init(dir, Options{Serial: 1}, true)
	if err != nil {
		t.Fatalf("init --force over damaged counters: %v", err)
	}
	d.Close()
	if d, err = Read(dir); err != nil || d.PIV.Status().PINRetries != piv.DefaultPINRetries {
		t.Errorf("the new card: %v", err)
	}
}

// initCard makes a card in a new state directory, closes it and returns the directory.
func initCard(t *testing.T, opts Options) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "card")
	d, err := Init(dir, opts, false)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	return dir
}

// A right PIN from a full counter leaves the counters file one try short, which is what a crash
// would load; Close commits the full counter.
func TestCloseCommitsDeferredRestore(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "card")
	d, err := Init(dir, Options{Serial: 43}, false)
	if err != nil {
		t.Fatal(err)
	}
	onDisk := func() int {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, state.CountersFile))
		if err != nil {
			t.Fatal(err)
		}
		_, _, c, err := state.DecodeCounters(b)
		if err != nil {
			t.Fatal(err)
		}
		return c.PIN
	}
	c := pivclient.New(d.Card)
	c.Select(ctx)
	for range 2 {
		if err := c.VerifyPIN(ctx, []byte("123456")); err != nil {
			t.Fatal(err)
		}
	}
	if n := onDisk(); n != 2 {
		t.Fatalf("PIN counter on disk %d after right PINs, want 2 (the restore deferred)", n)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if n := onDisk(); n != 3 {
		t.Fatalf("PIN counter on disk %d after Close, want 3", n)
	}
	d, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if st := d.PIV.Status(); st.PINRetries != 3 {
		t.Errorf("reopened with %d PIN tries, want 3", st.PINRetries)
	}
}

package interop

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"math/big"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"tokenlab/emulator/piv"
	"tokenlab/emulator/yubikey"
	"tokenlab/middleware/pivclient"
)

// newCard runs `tokenlab card init` into a fresh state directory and returns it.
func newCard(t *testing.T, args ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "card")
	run(t, tokenlabBin, append([]string{"card", "init", "--state", dir}, args...)...)
	return dir
}

// provision opens the card in dir in process (no daemon may hold it), generates a key in slot
// and stores a self-signed certificate for it, made with the card's own signature.
func provision(t *testing.T, dir string, slot, alg, pinPolicy byte, cn string) *x509.Certificate {
	t.Helper()
	ctx := context.Background()
	d, err := yubikey.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c := pivclient.New(d.Card)
	if _, err := c.Select(ctx); err != nil {
		t.Fatal(err)
	}
	m, err := c.GetMetadata(ctx, pivclient.SlotCardManagement)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AuthenticateManagementKey(ctx, m.Algorithm, piv.DefaultManagementKey); err != nil {
		t.Fatal(err)
	}
	pub, err := c.GenerateKey(ctx, slot, alg, pinPolicy, pivclient.TouchPolicyNever)
	if err != nil {
		t.Fatal(err)
	}
	signer := &cardSigner{c: c, slot: slot, alg: alg, pub: pub}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetCertificate(ctx, slot, der); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// cardSigner signs ECDSA digests through the card, presenting the PIN before each signature.
type cardSigner struct {
	c    *pivclient.Client
	slot byte
	alg  byte
	pub  crypto.PublicKey
}

func (s *cardSigner) Public() crypto.PublicKey { return s.pub }

func (s *cardSigner) Sign(_ io.Reader, digest []byte, _ crypto.SignerOpts) ([]byte, error) {
	ctx := context.Background()
	if err := s.c.VerifyPIN(ctx, []byte("123456")); err != nil {
		return nil, err
	}
	return s.c.Authenticate(ctx, s.slot, s.alg, digest)
}

// status is the JSON of `tokenlab card status --json`.
type status struct {
	Serial        uint32  `json:"serial"`
	Version       string  `json:"version"`
	PIN           retries `json:"pin"`
	PUK           retries `json:"puk"`
	ManagementKey struct {
		Algorithm   string `json:"algorithm"`
		Default     bool   `json:"default"`
		TouchPolicy string `json:"touch_policy"`
	} `json:"management_key"`
	Slots []slotStatus `json:"slots"`
}

type slotStatus struct {
	Slot        string `json:"slot"`
	Algorithm   string `json:"algorithm"`
	PINPolicy   string `json:"pin_policy"`
	TouchPolicy string `json:"touch_policy"`
	Origin      string `json:"origin"`
	Subject     string `json:"certificate_subject"`
}

type retries struct {
	Retries    int  `json:"retries"`
	MaxRetries int  `json:"max_retries"`
	Default    bool `json:"default"`
}

// slotStatus returns the status of one slot, nil when it is empty.
func (st status) slot(s string) *slotStatus {
	for i := range st.Slots {
		if st.Slots[i].Slot == s {
			return &st.Slots[i]
		}
	}
	return nil
}

// cardStatus reads the card's persistent state with `tokenlab card status --json`; it works
// while `tokenlab serve` holds the card.
func cardStatus(t *testing.T, dir string) status {
	t.Helper()
	out, err := exec.Command(tokenlabBin, "card", "status", "--state", dir, "--json").Output()
	if err != nil {
		t.Fatalf("card status: %v", err)
	}
	var st status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("card status: %v\n%s", err, out)
	}
	return st
}

package interop

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
	"time"

	"tokenlab/apdu/cardsock"
	"tokenlab/middleware"
	"tokenlab/middleware/pivclient"
	"tokenlab/middleware/prompt"
)

// TestCardSocket: another process reaches the card `tokenlab serve` holds through its card
// socket, with a middleware Token of its own whose policy decides the prompts.
func TestCardSocket(t *testing.T) {
	dir := provisionP11(t)
	sock := filepath.Join(t.TempDir(), "card.sock")
	s := startServe(t, dir, "--vpcd", "off", "--card-socket", sock)
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("tokenlab serve: %v\n%s", err, s.log)
		}
	})
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i == 500 {
			t.Fatalf("no card socket:\n%s", s.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx := context.Background()
	rec := &middleware.Recorder{}
	answers := prompt.NewScript(prompt.Answer{PIN: "123456"}, prompt.Answer{PIN: "123456"})
	connect := func(app string) {
		tok, err := middleware.Open(ctx, cardsock.Dialer(sock), middleware.Options{
			Application: app, Policy: middleware.Profiles[0], Prompter: answers, Audit: rec})
		if err != nil {
			t.Fatal(err)
		}
		defer tok.Close(ctx)
		signer, err := tok.Signer(ctx, pivclient.SlotAuthentication)
		if err != nil {
			t.Fatal(err)
		}
		digest := sha256.Sum256([]byte(app))
		sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if !ecdsa.VerifyASN1(signer.Public().(*ecdsa.PublicKey), digest[:], sig) {
			t.Error("signature through the card socket does not verify")
		}
	}
	connect("first")
	connect("second")
	if rec.Count("first", middleware.EventPrompt) != 1 || rec.Count("second", middleware.EventPrompt) != 1 {
		t.Errorf("strict-2fa over the card socket: prompts %d and %d, want 1 and 1", rec.Count("first", middleware.EventPrompt), rec.Count("second", middleware.EventPrompt))
	}
	if st := cardStatus(t, dir); st.PIN.Retries != 3 {
		t.Errorf("PIN tries %d", st.PIN.Retries)
	}
}

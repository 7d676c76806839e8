package interop

import (
	"os"
	"os/exec"
	"testing"
)

// peer is a program or library a test runs, and the Debian package that provides it.
type peer struct {
	path string // absolute path, or a name looked up in PATH
	pkg  string
}

// Peers by role. Paths are Debian 12's.
var (
	peerPcscd          = peer{"/usr/sbin/pcscd", "pcscd"}
	peerVpcdDriver     = peer{"/usr/lib/pcsc/drivers/serial/libifdvpcd.so", "vsmartcard-vpcd"}
	peerOpenscTool     = peer{"opensc-tool", "opensc"}
	peerPkcs11Tool     = peer{"pkcs11-tool", "opensc"}
	peerOpenscPKCS11   = peer{"/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so", "opensc-pkcs11"}
	peerYubicoPIVTool  = peer{"yubico-piv-tool", "yubico-piv-tool"}
	peerYKCS11         = peer{"/usr/lib/x86_64-linux-gnu/libykcs11.so", "ykcs11"}
	peerYkman          = peer{"ykman", "yubikey-manager"}
	peerPcscliteDevLib = peer{"/usr/lib/x86_64-linux-gnu/libpcsclite.so", "libpcsclite-dev"}
)

// need fails the test when a peer is missing, naming the Debian package. Interop tests never
// skip: a missing peer on a CI machine is a broken set-up, and `make peers` fixes it.
func need(t testing.TB, peers ...peer) {
	t.Helper()
	for _, p := range peers {
		if err := find(p); err != nil {
			t.Fatalf("%s is missing: install the Debian package %s (make peers does)", p.path, p.pkg)
		}
	}
}

func find(p peer) error {
	if p.path[0] == '/' {
		_, err := os.Stat(p.path)
		return err
	}
	_, err := exec.LookPath(p.path)
	return err
}

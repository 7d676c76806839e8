// Package fuzzseed writes recorded inputs into a package's fuzz corpus, in the file format of
// `go test -fuzz`: testdata/fuzz/TARGET/NAME-HASH, one []byte value.
package fuzzseed

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
)

// Write adds p to the seed corpus of fuzz target in the current directory (a test's package
// directory). The file name is name and a short hash of p, so that recording again replaces
// a seed only with an identical one.
func Write(target, name string, p []byte) error {
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	h := sha256.Sum256(p)
	file := filepath.Join(dir, fmt.Sprintf("%s-%x", name, h[:4]))
	return os.WriteFile(file, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", p), 0o644)
}

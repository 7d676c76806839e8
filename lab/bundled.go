package lab

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"

	"tokenlab"
)

// bundledDir is where the bundled scenarios are, in the repository and in tokenlab.Scenarios.
const bundledDir = "testdata/scenarios"

// Bundled parses every bundled scenario, in file name order.
func Bundled() ([]*Scenario, error) {
	names, err := fs.Glob(tokenlab.Scenarios, bundledDir+"/*.scenario")
	if err != nil {
		return nil, err
	}
	var out []*Scenario
	for _, n := range names {
		sc, err := parseBundled(n)
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out, nil
}

func readBundled(name string) ([]byte, error) { return fs.ReadFile(tokenlab.Scenarios, name) }

func parseBundled(name string) (*Scenario, error) {
	f, err := tokenlab.Scenarios.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(name, f)
}

// Load reads a scenario: the file at arg when there is one, else the bundled scenario of that
// name (with or without ".scenario").
func Load(arg string) (*Scenario, error) {
	f, err := os.Open(arg)
	if err == nil {
		defer f.Close()
		return Parse(arg, f)
	}
	if !os.IsNotExist(err) || strings.ContainsRune(arg, '/') {
		return nil, err
	}
	name := path.Join(bundledDir, strings.TrimSuffix(arg, ".scenario")+".scenario")
	if _, serr := fs.Stat(tokenlab.Scenarios, name); serr != nil {
		return nil, fmt.Errorf("%s: no such file, and no bundled scenario of that name (tokenlab lab list shows them)", arg)
	}
	return parseBundled(name)
}

// Package tokenlab holds what the tokenlab binary embeds from the repository: the bundled lab
// scenarios of testdata/scenarios, which `tokenlab lab run NAME` runs without a file.
package tokenlab

import "embed"

// Scenarios are the bundled scenario files, testdata/scenarios/*.scenario.
//
//go:embed testdata/scenarios/*.scenario
var Scenarios embed.FS

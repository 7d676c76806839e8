package state

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
)

// SchemaVersion is the version of the on-disk document this binary writes and the newest it reads.
//
// Version 2 keeps the retry counters in CountersFile too, newer than the document's; a binary
// that reads only version 1 would miss them and could give tries back, so it must refuse. A
// version 1 document has no counters file and reads as it is.
const SchemaVersion = 2

// Card is the persistent content of one virtual card.
//
// Field values are strings in the field's own terms ("9a", "eccp256", "once") so that a person can
// read the file; the applet that owns each part validates it when it loads.
type Card struct {
	Schema  int    `json:"schema"`
	Serial  uint32 `json:"serial"`
	Version string `json:"version"` // firmware version reported by the card, "5.7.1"
	ATR     Hex    `json:"atr"`
	PIV     PIV    `json:"piv"`
}

// PIV is the persistent content of the PIV applet.
type PIV struct {
	PIN           Credential    `json:"pin"`
	PUK           Credential    `json:"puk"`
	ManagementKey ManagementKey `json:"management_key"`
	// DefaultManagementKeyAlgorithm is the factory algorithm that RESET restores ("aes192", "3des").
	DefaultManagementKeyAlgorithm string   `json:"default_management_key_algorithm"`
	Keys                          []Key    `json:"keys"`
	Objects                       []Object `json:"objects"`
	// AttestationRoot is the DER certificate of the per-card CA that issued the F9 attestation
	// certificate. Its private key was discarded after issuing, as a manufacturer's would be.
	AttestationRoot Base64 `json:"attestation_root,omitempty"`
}

// Credential is a PIN or PUK with its retry counter.
type Credential struct {
	Value      Hex `json:"value"` // 8 bytes, right-padded with FF
	Retries    int `json:"retries"`
	MaxRetries int `json:"max_retries"`
}

// ManagementKey is the card management key (key reference 9B).
type ManagementKey struct {
	Algorithm   string `json:"algorithm"`
	Key         Hex    `json:"key"`
	TouchPolicy string `json:"touch_policy"`
}

// Key is an asymmetric key in a PIV slot. Private is the key store's own encoding of the key,
// opaque to everything but the store named in Store.
type Key struct {
	Slot        string `json:"slot"`
	Algorithm   string `json:"algorithm"`
	PINPolicy   string `json:"pin_policy"`
	TouchPolicy string `json:"touch_policy"`
	Origin      string `json:"origin"`
	Store       string `json:"store"`
	Private     Base64 `json:"private"`
}

// Object is a PIV data object: its tag and the value inside the 53 wrapper.
type Object struct {
	Tag   string `json:"tag"`
	Value Base64 `json:"value"`
}

// Hex is a byte string written as lower-case hex.
type Hex []byte

// MarshalText implements encoding.TextMarshaler.
func (h Hex) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(h)), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (h *Hex) UnmarshalText(b []byte) error {
	v, err := hex.DecodeString(string(b))
	if err != nil {
		return fmt.Errorf("not hex: %w", err)
	}
	*h = v
	return nil
}

// Base64 is a byte string written in standard base64.
type Base64 []byte

// MarshalText implements encoding.TextMarshaler.
func (b Base64) MarshalText() ([]byte, error) {
	return []byte(base64.StdEncoding.EncodeToString(b)), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (b *Base64) UnmarshalText(t []byte) error {
	v, err := base64.StdEncoding.DecodeString(string(t))
	if err != nil {
		return fmt.Errorf("not base64: %w", err)
	}
	*b = v
	return nil
}

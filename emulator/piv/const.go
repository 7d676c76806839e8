package piv

import (
	"fmt"
	"strconv"
	"strings"

	"tokenlab/apdu/tlv"
	"tokenlab/emulator/keystore"
)

// AID is the full PIV application identifier (SP 800-73-4 Pt 1 §2.2); hosts select it by its
// first 5, 9 or 11 bytes.
var AID = []byte{0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00}

// Instructions: SP 800-73-4 Pt 2 §3 and the Yubico extensions (developers.yubico.com/PIV).
const (
	insVerify           = 0x20
	insChangeReference  = 0x24
	insResetRetry       = 0x2C
	insGenerate         = 0x47
	insAuthenticate     = 0x87
	insGetData          = 0xCB
	insPutData          = 0xDB
	insMoveKey          = 0xF6 // Yubico 5.7
	insGetMetadata      = 0xF7 // Yubico 5.3
	insGetSerial        = 0xF8 // Yubico 5.0
	insAttest           = 0xF9 // Yubico 4.3
	insSetPINRetries    = 0xFA
	insReset            = 0xFB
	insGetVersion       = 0xFD
	insImportKey        = 0xFE
	insSetManagementKey = 0xFF
)

// Slot is a PIV key reference.
type Slot byte

// Key references (SP 800-73-4 Pt 1 Table 4b) and the Yubico attestation slot.
const (
	SlotAuthentication     Slot = 0x9A
	SlotCardManagement     Slot = 0x9B
	SlotSignature          Slot = 0x9C
	SlotKeyManagement      Slot = 0x9D
	SlotCardAuthentication Slot = 0x9E
	SlotRetired1           Slot = 0x82
	SlotRetired20          Slot = 0x95
	SlotAttestation        Slot = 0xF9

	refPIN Slot = 0x80
	refPUK Slot = 0x81
)

// IsKeySlot reports whether s holds an asymmetric key: 9A, 9C, 9D, 9E, 82–95 or F9.
func (s Slot) IsKeySlot() bool {
	switch s {
	case SlotAuthentication, SlotSignature, SlotKeyManagement, SlotCardAuthentication, SlotAttestation:
		return true
	}
	return s >= SlotRetired1 && s <= SlotRetired20
}

func (s Slot) String() string { return fmt.Sprintf("%02x", byte(s)) }

// ParseSlot parses a slot written in hex ("9a").
func ParseSlot(str string) (Slot, error) {
	v, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(str), "0x"), 16, 8)
	if err != nil || !Slot(v).IsKeySlot() {
		return 0, fmt.Errorf("%q is not a key slot (9a, 9c, 9d, 9e, 82-95, f9)", str)
	}
	return Slot(v), nil
}

// CertificateTag returns the data object holding the certificate of a key slot (SP 800-73-4
// Pt 1 Table 3; 5FFF01 for the Yubico attestation slot).
func (s Slot) CertificateTag() tlv.Tag {
	switch {
	case s == SlotAuthentication:
		return tagCertAuthentication
	case s == SlotSignature:
		return tagCertSignature
	case s == SlotKeyManagement:
		return tagCertKeyManagement
	case s == SlotCardAuthentication:
		return tagCertCardAuthentication
	case s == SlotAttestation:
		return tagCertAttestation
	case s >= SlotRetired1 && s <= SlotRetired20:
		return tagCertRetired1 + tlv.Tag(s-SlotRetired1)
	}
	return 0
}

// Data object tags (SP 800-73-4 Pt 1 Table 3, Yubico).
const (
	tagDiscovery              tlv.Tag = 0x7E
	tagCardCapability         tlv.Tag = 0x5FC107
	tagCHUID                  tlv.Tag = 0x5FC102
	tagCertAuthentication     tlv.Tag = 0x5FC105
	tagCertSignature          tlv.Tag = 0x5FC10A
	tagCertKeyManagement      tlv.Tag = 0x5FC10B
	tagCertCardAuthentication tlv.Tag = 0x5FC101
	tagFingerprints           tlv.Tag = 0x5FC103
	tagSecurityObject         tlv.Tag = 0x5FC106
	tagFacialImage            tlv.Tag = 0x5FC108
	tagPrintedInformation     tlv.Tag = 0x5FC109
	tagKeyHistory             tlv.Tag = 0x5FC10C
	tagCertRetired1           tlv.Tag = 0x5FC10D
	tagIris                   tlv.Tag = 0x5FC121
	tagCertAttestation        tlv.Tag = 0x5FFF01
	tagYubicoAdminData        tlv.Tag = 0x5FFF00
	tagDataObjectWrapper      tlv.Tag = 0x53
	tagTagList                tlv.Tag = 0x5C
	tagDynamicAuthentication  tlv.Tag = 0x7C
	tagPublicKeyTemplate      tlv.Tag = 0x7F49
	tagControlReference       tlv.Tag = 0xAC
	tagApplicationProperty    tlv.Tag = 0x61
	tagApplicationIdentifier  tlv.Tag = 0x4F
	tagAllocationAuthority    tlv.Tag = 0x79
	tagPINUsagePolicy         tlv.Tag = 0x5F2F
	tagCryptographicMechanism tlv.Tag = 0x80
	tagPINPolicy              tlv.Tag = 0xAA
	tagTouchPolicy            tlv.Tag = 0xAB
	tagWitness                tlv.Tag = 0x80
	tagChallenge              tlv.Tag = 0x81
	tagResponse               tlv.Tag = 0x82
	tagExponentiation         tlv.Tag = 0x85
	tagRSAModulus             tlv.Tag = 0x81
	tagRSAExponent            tlv.Tag = 0x82
	tagECPoint                tlv.Tag = 0x86
	tagMetadataAlgorithm      tlv.Tag = 0x01
	tagMetadataPolicy         tlv.Tag = 0x02
	tagMetadataOrigin         tlv.Tag = 0x03
	tagMetadataPublicKey      tlv.Tag = 0x04
	tagMetadataIsDefault      tlv.Tag = 0x05
	tagMetadataRetries        tlv.Tag = 0x06
)

// pinProtected lists the objects readable only after VERIFY (SP 800-73-4 Pt 1 Table 3 "PIN"
// access rule). A YubiKey answers 6982 for them before VERIFY even when they do not exist.
func pinProtected(t tlv.Tag) bool {
	switch t {
	case tagFingerprints, tagFacialImage, tagPrintedInformation, tagIris:
		return true
	}
	return false
}

// Algorithm identifiers on the wire (SP 800-78-4 Table 6-2; Yubico E0/E1 for 25519).
const (
	algTDES    = 0x03
	algRSA1024 = 0x06
	algRSA2048 = 0x07
	algRSA3072 = 0x05
	algRSA4096 = 0x16
	algAES128  = 0x08
	algAES192  = 0x0A
	algAES256  = 0x0C
	algECCP256 = 0x11
	algECCP384 = 0x14
	algEd25519 = 0xE0
	algX25519  = 0xE1
	algPIN     = 0xFF // GET METADATA for PIN and PUK
)

var asymmetricAlgs = map[byte]keystore.Algorithm{
	algRSA1024: keystore.RSA1024,
	algRSA2048: keystore.RSA2048,
	algRSA3072: keystore.RSA3072,
	algRSA4096: keystore.RSA4096,
	algECCP256: keystore.ECCP256,
	algECCP384: keystore.ECCP384,
	algEd25519: keystore.Ed25519,
	algX25519:  keystore.X25519,
}

func algID(a keystore.Algorithm) byte {
	switch a {
	case keystore.RSA1024:
		return algRSA1024
	case keystore.RSA2048:
		return algRSA2048
	case keystore.RSA3072:
		return algRSA3072
	case keystore.RSA4096:
		return algRSA4096
	case keystore.ECCP256:
		return algECCP256
	case keystore.ECCP384:
		return algECCP384
	case keystore.Ed25519:
		return algEd25519
	case keystore.X25519:
		return algX25519
	}
	return 0
}

// PINPolicy says when a slot's private key needs the PIN (tag AA).
type PINPolicy byte

// PIN policies. Default means the slot's default; the match policies (biometric) are not emulated.
const (
	PINPolicyDefault PINPolicy = 0
	PINPolicyNever   PINPolicy = 1
	PINPolicyOnce    PINPolicy = 2
	PINPolicyAlways  PINPolicy = 3
)

var pinPolicyNames = [...]string{"default", "never", "once", "always"}

func (p PINPolicy) String() string {
	if int(p) < len(pinPolicyNames) {
		return pinPolicyNames[p]
	}
	return fmt.Sprintf("PINPolicy(%d)", byte(p))
}

// TouchPolicy says when a slot's private key needs a touch (tag AB).
type TouchPolicy byte

// Touch policies. Cached accepts a touch from the last 15 seconds.
const (
	TouchPolicyDefault TouchPolicy = 0
	TouchPolicyNever   TouchPolicy = 1
	TouchPolicyAlways  TouchPolicy = 2
	TouchPolicyCached  TouchPolicy = 3
)

var touchPolicyNames = [...]string{"default", "never", "always", "cached"}

func (p TouchPolicy) String() string {
	if int(p) < len(touchPolicyNames) {
		return touchPolicyNames[p]
	}
	return fmt.Sprintf("TouchPolicy(%d)", byte(p))
}

func parseName[T ~byte](names []string, s, what string) (T, error) {
	for i, n := range names {
		if i > 0 && n == s {
			return T(i), nil
		}
	}
	return 0, fmt.Errorf("%q is not a %s", s, what)
}

// ParsePINPolicy parses "never", "once" or "always".
func ParsePINPolicy(s string) (PINPolicy, error) {
	return parseName[PINPolicy](pinPolicyNames[:], s, "PIN policy (never, once, always)")
}

// ParseTouchPolicy parses "never", "always" or "cached".
func ParseTouchPolicy(s string) (TouchPolicy, error) {
	return parseName[TouchPolicy](touchPolicyNames[:], s, "touch policy (never, always, cached)")
}

// defaultPINPolicy is the YubiKey's per-slot default: 9C always, 9E never, the rest once.
func defaultPINPolicy(s Slot) PINPolicy {
	switch s {
	case SlotSignature:
		return PINPolicyAlways
	case SlotCardAuthentication, SlotAttestation:
		return PINPolicyNever
	}
	return PINPolicyOnce
}

// Origin says whether a key was generated on the card or imported (GET METADATA tag 03).
type Origin byte

// Origins.
const (
	OriginGenerated Origin = 1
	OriginImported  Origin = 2
)

func (o Origin) String() string {
	switch o {
	case OriginGenerated:
		return "generated"
	case OriginImported:
		return "imported"
	}
	return fmt.Sprintf("Origin(%d)", byte(o))
}

// Version is a firmware version. Features appear with the YubiKey firmware that introduced them.
type Version struct{ Major, Minor, Patch byte }

// ParseVersion parses "5.7.1".
func ParseVersion(s string) (Version, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return Version{}, fmt.Errorf("%q is not a version X.Y.Z", s)
	}
	var v [3]byte
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 8)
		if err != nil {
			return Version{}, fmt.Errorf("%q is not a version X.Y.Z (each part 0-255)", s)
		}
		v[i] = byte(n)
	}
	return Version{v[0], v[1], v[2]}, nil
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// AtLeast reports whether v >= major.minor.patch.
func (v Version) AtLeast(major, minor, patch byte) bool {
	if v.Major != major {
		return v.Major > major
	}
	if v.Minor != minor {
		return v.Minor > minor
	}
	return v.Patch >= patch
}

// Features of the emulated firmware, by the release that introduced them.
func (v Version) hasAttest() bool   { return v.AtLeast(4, 3, 0) }
func (v Version) hasSerial() bool   { return v.AtLeast(5, 0, 0) }
func (v Version) hasMetadata() bool { return v.AtLeast(5, 3, 0) }
func (v Version) hasAES() bool      { return v.AtLeast(5, 4, 0) }
func (v Version) has57() bool       { return v.AtLeast(5, 7, 0) } // move/delete, 25519, RSA 3072/4096

func (v Version) supports(a keystore.Algorithm) bool {
	switch a {
	case keystore.RSA3072, keystore.RSA4096, keystore.Ed25519, keystore.X25519:
		return v.has57()
	}
	return true
}

package pkcs11srv

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"fmt"
	"math/big"

	"tokenlab/middleware"
	"tokenlab/middleware/pivclient"
)

// object is a PKCS#11 object: a key slot's private key, public key or certificate, or a
// session object (a derived secret key). Attribute values are in the form a C caller's memory
// holds them: CK_ULONG as 8 little-endian bytes, CK_BBOOL as one byte.
type object struct {
	handle  uint64
	class   uint64
	private bool   // visible to a logged-in application only
	session uint64 // the session that owns a session object; 0 for the card's objects
	key     middleware.Key
	attrs   map[uint32][]byte
	// sensitive attributes exist but are never revealed (CKR_ATTRIBUTE_SENSITIVE).
	sensitive map[uint32]bool
}

func ulong(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func boolean(v bool) []byte {
	if v {
		return []byte{1}
	}
	return []byte{0}
}

// Curve parameters and points (PKCS #11 v3.0 §2.3.3): CKA_EC_PARAMS is the DER OID of the
// named curve, CKA_EC_POINT a DER OCTET STRING around the point.
var (
	oidP256    = []byte{0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07}
	oidP384    = []byte{0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22}
	oidEd25519 = []byte{0x06, 0x03, 0x2B, 0x65, 0x70}
	oidX25519  = []byte{0x06, 0x03, 0x2B, 0x65, 0x6E}
)

// keyLabels name the slots as OpenSC does.
func keyLabel(slot byte) string {
	switch slot {
	case pivclient.SlotAuthentication:
		return "PIV AUTH"
	case pivclient.SlotSignature:
		return "SIGN"
	case pivclient.SlotKeyManagement:
		return "KEY MAN"
	case pivclient.SlotCardAuthentication:
		return "CARD AUTH"
	}
	return fmt.Sprintf("RETIRED KEY %d", int(slot)-0x82+1)
}

// keyID is CKA_ID: 01 for 9A, 02 9C, 03 9D, 04 9E, 05..18 for 82..95 (OpenSC and ykcs11 agree).
func keyID(slot byte) byte {
	for i, s := range middleware.KeySlots() {
		if s == slot {
			return byte(i + 1)
		}
	}
	return 0
}

// Handles are stable: each key slot owns three (private key, public key, certificate).
func handleOf(slot byte, class uint64) uint64 {
	base := uint64(keyID(slot)) << 4
	switch class {
	case ckoPrivateKey:
		return base | 1
	case ckoPublicKey:
		return base | 2
	}
	return base | 3
}

// privateHandle returns the handle of a private object in login generation gen: a handle
// obtained before C_Logout stays invalid after the next login (PKCS #11 §5.6, C_Logout).
func privateHandle(slot byte, gen uint32) uint64 {
	return handleOf(slot, ckoPrivateKey) | uint64(gen)<<12
}

// objectsFor builds the objects of the token's keys under policy p, in login generation gen.
func objectsFor(keys []middleware.Key, p middleware.Policy, gen uint32) []*object {
	var out []*object
	for _, k := range keys {
		pub := publicAttrs(k)
		if pub == nil {
			continue // a key type PKCS#11 here cannot describe
		}
		common := func(class uint64, label string) map[uint32][]byte {
			return map[uint32][]byte{
				ckaClass:       ulong(class),
				ckaToken:       boolean(true),
				ckaID:          {keyID(k.Slot)},
				ckaLabel:       []byte(label),
				ckaModifiable:  boolean(false),
				ckaCopyable:    boolean(false),
				ckaDestroyable: boolean(false),
			}
		}
		// The private key. A PIN-never key (9E) is usable without login, so OpenSC shows it
		// without one too.
		private := k.PINPolicy != pivclient.PINPolicyNever
		h := handleOf(k.Slot, ckoPrivateKey)
		if private {
			h = privateHandle(k.Slot, gen)
		}
		priv := &object{handle: h, class: ckoPrivateKey, private: private, key: k,
			attrs: common(ckoPrivateKey, keyLabel(k.Slot)+" key"), sensitive: map[uint32]bool{}}
		for t, v := range pub {
			switch t {
			case ckaKeyType, ckaModulus, ckaModulusBits, ckaPublicExponent, ckaECParams, ckaPublicKeyInfo:
				priv.attrs[t] = v
			}
		}
		sign, decrypt, derive := capabilities(k)
		priv.attrs[ckaPrivate] = boolean(private)
		priv.attrs[ckaSensitive] = boolean(true)
		priv.attrs[ckaExtractable] = boolean(false)
		priv.attrs[ckaAlwaysSensitive] = boolean(true)
		priv.attrs[ckaNeverExtractable] = boolean(k.Generated)
		priv.attrs[ckaLocal] = boolean(k.Generated)
		priv.attrs[ckaSign] = boolean(sign)
		priv.attrs[ckaSignRecover] = boolean(false)
		priv.attrs[ckaDecrypt] = boolean(decrypt)
		priv.attrs[ckaUnwrap] = boolean(false)
		priv.attrs[ckaDerive] = boolean(derive)
		priv.attrs[ckaWrapWithTrusted] = boolean(false)
		priv.attrs[ckaAlwaysAuthenticate] = boolean(k.AlwaysAuthenticate(p))
		for _, t := range []uint32{ckaValue, ckaPrivateExponent, ckaPrime1, ckaPrime2, ckaExponent1, ckaExponent2, ckaCoefficient} {
			priv.sensitive[t] = true
		}
		if k.Certificate != nil {
			priv.attrs[ckaSubject] = k.Certificate.RawSubject
		}
		out = append(out, priv)

		pubObj := &object{handle: handleOf(k.Slot, ckoPublicKey), class: ckoPublicKey, key: k,
			attrs: common(ckoPublicKey, keyLabel(k.Slot)+" pubkey")}
		for t, v := range pub {
			pubObj.attrs[t] = v
		}
		pubObj.attrs[ckaPrivate] = boolean(false)
		pubObj.attrs[ckaVerify] = boolean(sign)
		pubObj.attrs[ckaEncrypt] = boolean(decrypt)
		pubObj.attrs[ckaWrap] = boolean(false)
		pubObj.attrs[ckaVerifyRecover] = boolean(false)
		pubObj.attrs[ckaDerive] = boolean(false)
		pubObj.attrs[ckaLocal] = boolean(k.Generated)
		if k.Certificate != nil {
			pubObj.attrs[ckaSubject] = k.Certificate.RawSubject
		}
		out = append(out, pubObj)

		if c := k.Certificate; c != nil {
			serial, _ := asn1.Marshal(c.SerialNumber)
			cert := &object{handle: handleOf(k.Slot, ckoCertificate), class: ckoCertificate, key: k,
				attrs: common(ckoCertificate, "Certificate for "+keyLabel(k.Slot))}
			cert.attrs[ckaPrivate] = boolean(false)
			cert.attrs[ckaCertificateType] = ulong(ckcX509)
			cert.attrs[ckaCertificateCategory] = ulong(ckCertCategoryToken)
			cert.attrs[ckaTrusted] = boolean(false)
			cert.attrs[ckaValue] = c.Raw
			cert.attrs[ckaSubject] = c.RawSubject
			cert.attrs[ckaIssuer] = c.RawIssuer
			cert.attrs[ckaSerialNumber] = serial
			cert.attrs[ckaPublicKeyInfo] = c.RawSubjectPublicKeyInfo
			out = append(out, cert)
		}
	}
	return out
}

// capabilities says what a key can do: sign, decrypt (RSA), derive (EC and X25519).
func capabilities(k middleware.Key) (sign, decrypt, derive bool) {
	switch k.Algorithm {
	case pivclient.AlgRSA1024, pivclient.AlgRSA2048, pivclient.AlgRSA3072, pivclient.AlgRSA4096:
		return true, true, false
	case pivclient.AlgECCP256, pivclient.AlgECCP384:
		return true, false, true
	case pivclient.AlgEd25519:
		return true, false, false
	case pivclient.AlgX25519:
		return false, false, true
	}
	return false, false, false
}

// publicAttrs returns the attributes that describe a key's public part, nil for a key type
// without a PKCS#11 description.
func publicAttrs(k middleware.Key) map[uint32][]byte {
	a := map[uint32][]byte{}
	if spki, err := x509.MarshalPKIXPublicKey(k.Public); err == nil {
		a[ckaPublicKeyInfo] = spki
	}
	point := func(p []byte) []byte {
		b, _ := asn1.Marshal(p)
		return b
	}
	switch pub := k.Public.(type) {
	case *rsa.PublicKey:
		a[ckaKeyType] = ulong(ckkRSA)
		a[ckaModulus] = pub.N.Bytes()
		a[ckaModulusBits] = ulong(uint64(pub.N.BitLen()))
		a[ckaPublicExponent] = big.NewInt(int64(pub.E)).Bytes()
	case *ecdsa.PublicKey:
		a[ckaKeyType] = ulong(ckkEC)
		switch pub.Curve {
		case elliptic.P256():
			a[ckaECParams] = oidP256
		case elliptic.P384():
			a[ckaECParams] = oidP384
		default:
			return nil
		}
		b, err := pub.Bytes()
		if err != nil {
			return nil
		}
		a[ckaECPoint] = point(b)
	case ed25519.PublicKey:
		a[ckaKeyType] = ulong(ckkECEdwards)
		a[ckaECParams] = oidEd25519
		a[ckaECPoint] = point(pub)
	case *ecdh.PublicKey:
		if pub.Curve() != ecdh.X25519() {
			return nil
		}
		a[ckaKeyType] = ulong(ckkECMontgomery)
		a[ckaECParams] = oidX25519
		a[ckaECPoint] = point(pub.Bytes())
	default:
		return nil
	}
	return a
}

// curveOf maps CKA_EC_PARAMS to a PIV algorithm.
func curveOf(params []byte) (byte, bool) {
	switch string(params) {
	case string(oidP256):
		return pivclient.AlgECCP256, true
	case string(oidP384):
		return pivclient.AlgECCP384, true
	case string(oidEd25519):
		return pivclient.AlgEd25519, true
	case string(oidX25519):
		return pivclient.AlgX25519, true
	}
	// The named curves by their printable names (PKCS #11 v3.0 allows them for Edwards curves).
	var name string
	if _, err := asn1.Unmarshal(params, &name); err == nil {
		switch name {
		case "edwards25519":
			return pivclient.AlgEd25519, true
		case "curve25519":
			return pivclient.AlgX25519, true
		}
	}
	return 0, false
}

// matches reports whether the object has every attribute of the template with the same value.
func (o *object) matches(template []Attribute) bool {
	for _, t := range template {
		if o.sensitive[t.Type] {
			return false // a search must not become an oracle for a value GetAttributeValue hides
		}
		v, ok := o.attrs[t.Type]
		if !ok || string(v) != string(t.Value) {
			return false
		}
	}
	return true
}

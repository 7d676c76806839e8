package piv

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"time"

	"tokenlab/apdu"
	"tokenlab/apdu/tlv"
	"tokenlab/emulator/keystore"
)

// Yubico attestation extensions (developers.yubico.com/PIV/Introduction/PIV_attestation.html).
var (
	oidFirmwareVersion = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 41482, 3, 3}
	oidSerialNumber    = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 41482, 3, 7}
	oidUsagePolicy     = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 41482, 3, 8}
	oidFormFactor      = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 41482, 3, 9}
)

// provisionAttestation gives a new card its attestation key (F9, P-256) and a certificate for it
// from a per-card root CA, as a manufacturer does. The root's private key is discarded; its
// certificate is kept so users can verify attestations.
func (a *Applet) provisionAttestation() error {
	rootKey, err := keystore.Software{}.Generate(keystore.ECCP256)
	if err != nil {
		return err
	}
	now := time.Now().UTC().Truncate(time.Second)
	root := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: fmt.Sprintf("tokenlab PIV Root CA Serial %d", a.cfg.Serial)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              time.Date(2099, 12, 31, 23, 59, 59, 0, time.UTC),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, root, root, rootKey.Public(), keystore.Signer(rootKey))
	if err != nil {
		return fmt.Errorf("piv: attestation root: %w", err)
	}
	root, _ = x509.ParseCertificate(rootDER)

	attKey, err := a.cfg.Keys.Generate(keystore.ECCP256)
	if err != nil {
		return err
	}
	att := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "tokenlab PIV Attestation"},
		NotBefore:             root.NotBefore,
		NotAfter:              root.NotAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	attDER, err := x509.CreateCertificate(rand.Reader, att, root, attKey.Public(), keystore.Signer(rootKey))
	if err != nil {
		return fmt.Errorf("piv: attestation certificate: %w", err)
	}
	sk, sw := a.newSlotKey(attKey, PINPolicyNever, TouchPolicyNever, OriginGenerated)
	if !sw.OK() {
		return fmt.Errorf("piv: attestation key: %v", sw)
	}
	a.p.setKey(SlotAttestation, sk)
	a.p.setObject(tagCertAttestation, certificateObject(attDER))
	a.p.attestRoot = rootDER
	return nil
}

// AttestationRoot returns the DER certificate of the per-card root that issued the attestation
// certificate, nil when the card has none (an imported F9 key and certificate).
func (a *Applet) AttestationRoot() []byte { return a.p.attestRoot }

// certificateObject wraps a DER certificate as a PIV certificate object:
// 70 cert, 71 certinfo (00: not compressed), FE LRC (empty).
func certificateObject(der []byte) []byte {
	var obj []byte
	obj = tlv.Append(obj, 0x70, der)
	obj = tlv.Append(obj, 0x71, []byte{0x00})
	return tlv.Append(obj, 0xFE, nil)
}

func randomSerial() *big.Int {
	return new(big.Int).SetBytes(random(16))
}

// attest implements the Yubico ATTEST (F9): P1 the slot. It answers a DER certificate for the
// slot's public key, signed by the attestation key, for keys generated on the card only.
func (a *Applet) attest(cmd *apdu.Command, rsp []byte) ([]byte, apdu.StatusWord) {
	slot := Slot(cmd.P1)
	if cmd.P2 != 0 {
		return rsp, apdu.SWIncorrectP1P2
	}
	if len(cmd.Data) > 0 {
		return rsp, apdu.SWWrongLength
	}
	if !slot.IsKeySlot() || slot == SlotAttestation {
		return rsp, apdu.SWWrongP1P2
	}
	k := a.p.keys[slot]
	if k == nil {
		return rsp, apdu.SWNotFound
	}
	if k.origin != OriginGenerated {
		return rsp, apdu.SWIncorrectData
	}
	att := a.p.keys[SlotAttestation]
	obj, ok := a.p.objects[tagCertAttestation]
	if att == nil || !ok {
		return rsp, apdu.SWNotFound
	}
	der, ok := certificateFromObject(obj)
	if !ok {
		return rsp, apdu.SWNoPreciseDiagnosis
	}
	issuer, err := x509.ParseCertificate(der)
	if err != nil {
		return rsp, apdu.SWNoPreciseDiagnosis
	}
	serial, _ := asn1.Marshal(int64(a.cfg.Serial))
	v := a.cfg.Version
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "YubiKey PIV Attestation " + slot.String()},
		NotBefore:    issuer.NotBefore,
		NotAfter:     issuer.NotAfter,
		ExtraExtensions: []pkix.Extension{
			{Id: oidFirmwareVersion, Value: []byte{v.Major, v.Minor, v.Patch}},
			{Id: oidSerialNumber, Value: serial},
			{Id: oidUsagePolicy, Value: []byte{byte(k.pin), byte(k.touch)}},
			{Id: oidFormFactor, Value: []byte{a.cfg.FormFactor}},
		},
	}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, k.key.Public(), keystore.Signer(att.key))
	if err != nil {
		return rsp, apdu.SWNoPreciseDiagnosis
	}
	return append(rsp, cert...), apdu.SWSuccess
}

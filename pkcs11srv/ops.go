package pkcs11srv

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math/big"
	"slices"
	"time"

	"tokenlab/internal/rsapad"
	"tokenlab/middleware"
	"tokenlab/middleware/pivclient"
)

// Mechanism is a CK_MECHANISM with its parameters decoded where the server uses them.
type Mechanism struct {
	Type uint64
	// PSS parameters of CKM_RSA_PKCS_PSS and CKM_SHA*_RSA_PKCS_PSS.
	PSS *PSSParams
	// OAEP parameters of CKM_RSA_PKCS_OAEP.
	OAEP *OAEPParams
	// ECDH parameters of CKM_ECDH1_DERIVE.
	ECDH *ECDH1Params
	// Param is the raw parameter of other mechanisms.
	Param []byte
}

// ECDH1Params is CK_ECDH1_DERIVE_PARAMS.
type ECDH1Params struct {
	KDF                    uint64
	SharedData, PublicData []byte
}

// PSSParams is CK_RSA_PKCS_PSS_PARAMS.
type PSSParams struct{ Hash, MGF, SaltLen uint64 }

// OAEPParams is CK_RSA_PKCS_OAEP_PARAMS.
type OAEPParams struct {
	Hash, MGF, Source uint64
	Label             []byte
}

// MechanismInfo is CK_MECHANISM_INFO.
type MechanismInfo struct{ MinKeySize, MaxKeySize, Flags uint64 }

// mechanisms lists what the token does; the sizes are bits for RSA and EC.
var mechanisms = map[uint64]MechanismInfo{
	ckmRSAPKCSKeyPairGen:   {1024, 4096, ckfHW | ckfGenerateKeyPair},
	ckmRSAPKCS:             {1024, 4096, ckfHW | ckfSign | ckfDecrypt | ckfVerify},
	ckmRSAX509:             {1024, 4096, ckfHW | ckfSign | ckfDecrypt | ckfVerify},
	ckmRSAPKCSPSS:          {1024, 4096, ckfHW | ckfSign | ckfVerify},
	ckmRSAPKCSOAEP:         {1024, 4096, ckfHW | ckfDecrypt},
	ckmSHA1RSAPKCS:         {1024, 4096, ckfHW | ckfSign | ckfVerify},
	ckmSHA256RSAPKCS:       {1024, 4096, ckfHW | ckfSign | ckfVerify},
	ckmSHA384RSAPKCS:       {1024, 4096, ckfHW | ckfSign | ckfVerify},
	ckmSHA512RSAPKCS:       {1024, 4096, ckfHW | ckfSign | ckfVerify},
	ckmSHA256RSAPKCSPSS:    {1024, 4096, ckfHW | ckfSign | ckfVerify},
	ckmSHA384RSAPKCSPSS:    {1024, 4096, ckfHW | ckfSign | ckfVerify},
	ckmSHA512RSAPKCSPSS:    {1024, 4096, ckfHW | ckfSign | ckfVerify},
	ckmECKeyPairGen:        {256, 384, ckfHW | ckfGenerateKeyPair | ckfECFP | ckfECNamedCurve | ckfECUncompress},
	ckmECDSA:               {256, 384, ckfHW | ckfSign | ckfVerify | ckfECFP | ckfECNamedCurve | ckfECUncompress},
	ckmECDSASHA1:           {256, 384, ckfHW | ckfSign | ckfVerify | ckfECFP | ckfECNamedCurve | ckfECUncompress},
	ckmECDSASHA256:         {256, 384, ckfHW | ckfSign | ckfVerify | ckfECFP | ckfECNamedCurve | ckfECUncompress},
	ckmECDSASHA384:         {256, 384, ckfHW | ckfSign | ckfVerify | ckfECFP | ckfECNamedCurve | ckfECUncompress},
	ckmECDSASHA512:         {256, 384, ckfHW | ckfSign | ckfVerify | ckfECFP | ckfECNamedCurve | ckfECUncompress},
	ckmECDH1Derive:         {255, 384, ckfHW | ckfDerive | ckfECFP | ckfECNamedCurve | ckfECUncompress},
	ckmECEdwardsKeyPairGen: {255, 255, ckfHW | ckfGenerateKeyPair},
	ckmEDDSA:               {255, 255, ckfHW | ckfSign | ckfVerify},
	ckmSHA1:                {0, 0, ckfDigest},
	ckmSHA256:              {0, 0, ckfDigest},
	ckmSHA384:              {0, 0, ckfDigest},
	ckmSHA512:              {0, 0, ckfDigest},
}

// GetMechanismList is C_GetMechanismList.
func (a *App) GetMechanismList(slot uint64) ([]uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.checkSlot(slot); err != nil {
		return nil, err
	}
	out := make([]uint64, 0, len(mechanisms))
	for m := range mechanisms {
		out = append(out, m)
	}
	slices.Sort(out)
	return out, nil
}

// GetMechanismInfo is C_GetMechanismInfo.
func (a *App) GetMechanismInfo(slot, mech uint64) (MechanismInfo, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.checkSlot(slot); err != nil {
		return MechanismInfo{}, err
	}
	info, ok := mechanisms[mech]
	if !ok {
		return MechanismInfo{}, RV(ckrMechanismInvalid)
	}
	return info, nil
}

// Operation kinds.
const (
	opSign = iota + 1
	opVerify
	opDecrypt
	opDigest
)

// operation is the active cryptographic operation of a session.
type operation struct {
	kind       int
	mech       Mechanism
	key        middleware.Key
	hash       crypto.Hash // of a hash-and-sign mechanism or a digest
	h          hash.Hash   // running hash of multi-part input
	buf        []byte      // accumulated input of a single-part mechanism used in parts
	multipart  bool
	alwaysAuth bool   // the key needs a PIN right before use
	pin        []byte // that PIN: C_Login(CKU_CONTEXT_SPECIFIC)'s, or the login's just before (OpenSSH)
	ct         []byte // the ciphertext whose plaintext buf holds, when a C_Decrypt buffer was too small
	loggedOut  bool   // C_Logout ended it (unlike SoftHSM, bug #900, it cannot finish)
}

// endOp ends the session's operation and wipes the PIN it held.
func (s *session) endOp() {
	if s.op != nil {
		clear(s.op.pin)
		clear(s.op.buf)
		s.op = nil
	}
}

func hashOf(m uint64) crypto.Hash {
	switch m {
	case ckmSHA1RSAPKCS, ckmECDSASHA1, ckmSHA1:
		return crypto.SHA1
	case ckmSHA256RSAPKCS, ckmSHA256RSAPKCSPSS, ckmECDSASHA256, ckmSHA256:
		return crypto.SHA256
	case ckmSHA384RSAPKCS, ckmSHA384RSAPKCSPSS, ckmECDSASHA384, ckmSHA384:
		return crypto.SHA384
	case ckmSHA512RSAPKCS, ckmSHA512RSAPKCSPSS, ckmECDSASHA512, ckmSHA512:
		return crypto.SHA512
	}
	return 0
}

// digestOf maps a digest mechanism (CKM_SHA*) to its hash.
func digestOf(m uint64) crypto.Hash {
	switch m {
	case ckmSHA1, ckmSHA256, ckmSHA384, ckmSHA512:
		return hashOf(m)
	}
	return 0
}

// mgfOf maps a mask generation function (CKG_MGF1_SHA*) to its hash.
func mgfOf(g uint64) crypto.Hash {
	switch g {
	case ckgMGF1SHA1:
		return crypto.SHA1
	case ckgMGF1SHA256:
		return crypto.SHA256
	case ckgMGF1SHA384:
		return crypto.SHA384
	case ckgMGF1SHA512:
		return crypto.SHA512
	}
	return 0
}

// checkParams checks the parameters of PSS and OAEP when the operation starts, so that no
// card operation (and no PIN) is spent on parameters that cannot work: the hash and the MGF's
// hash agree, the salt fits the key, and a hash-and-sign PSS mechanism hashes with the hash
// its parameters name.
func checkParams(mech Mechanism, pub *rsa.PublicKey) error {
	switch mech.Type {
	case ckmRSAPKCSPSS, ckmSHA256RSAPKCSPSS, ckmSHA384RSAPKCSPSS, ckmSHA512RSAPKCSPSS:
		p := mech.PSS
		if p == nil {
			return RV(ckrMechanismParamInvalid)
		}
		h := digestOf(p.Hash)
		if h == 0 || mgfOf(p.MGF) != h || (mech.Type != ckmRSAPKCSPSS && hashOf(mech.Type) != h) {
			return RV(ckrMechanismParamInvalid)
		}
		if pub != nil && p.SaltLen > uint64((pub.N.BitLen()-1+7)/8-h.Size()-2) {
			return RV(ckrMechanismParamInvalid)
		}
	case ckmRSAPKCSOAEP:
		p := mech.OAEP
		if p == nil {
			return RV(ckrMechanismParamInvalid)
		}
		h := digestOf(p.Hash)
		if h == 0 || mgfOf(p.MGF) != h || p.Source > ckzDataSpecified || (p.Source == 0 && len(p.Label) > 0) {
			return RV(ckrMechanismParamInvalid)
		}
	}
	return nil
}

func newHash(h crypto.Hash) hash.Hash {
	switch h {
	case crypto.SHA1:
		return sha1.New()
	case crypto.SHA256:
		return sha256.New()
	case crypto.SHA384:
		return sha512.New384()
	case crypto.SHA512:
		return sha512.New()
	}
	return nil
}

// keyAccepts checks that a mechanism fits a key's type and use.
func keyAccepts(k middleware.Key, mech uint64, kind int) bool {
	rsaKey := isRSA(k.Algorithm)
	ecKey := k.Algorithm == pivclient.AlgECCP256 || k.Algorithm == pivclient.AlgECCP384
	switch mech {
	case ckmRSAPKCS, ckmRSAX509:
		return rsaKey
	case ckmRSAPKCSOAEP:
		return rsaKey && kind == opDecrypt
	case ckmRSAPKCSPSS, ckmSHA1RSAPKCS, ckmSHA256RSAPKCS, ckmSHA384RSAPKCS, ckmSHA512RSAPKCS,
		ckmSHA256RSAPKCSPSS, ckmSHA384RSAPKCSPSS, ckmSHA512RSAPKCSPSS:
		return rsaKey && kind != opDecrypt
	case ckmECDSA, ckmECDSASHA1, ckmECDSASHA256, ckmECDSASHA384, ckmECDSASHA512:
		return ecKey && kind != opDecrypt
	case ckmEDDSA:
		return k.Algorithm == pivclient.AlgEd25519 && kind != opDecrypt
	}
	return false
}

func isRSA(alg byte) bool {
	switch alg {
	case pivclient.AlgRSA1024, pivclient.AlgRSA2048, pivclient.AlgRSA3072, pivclient.AlgRSA4096:
		return true
	}
	return false
}

// begin starts an operation on a session with a key object.
func (a *App) begin(ctx context.Context, h uint64, kind int, mech Mechanism, keyHandle uint64) error {
	s, err := a.session(h)
	if err != nil {
		return err
	}
	if s.op != nil && !s.op.loggedOut {
		return RV(ckrOperationActive)
	}
	s.endOp() // one C_Logout ended: it no longer holds the session
	info, ok := mechanisms[mech.Type]
	if !ok {
		return RV(ckrMechanismInvalid)
	}
	want := map[int]uint64{opSign: ckfSign, opVerify: ckfVerify, opDecrypt: ckfDecrypt}[kind]
	if info.Flags&want == 0 {
		return RV(ckrMechanismInvalid)
	}
	o, err := a.keyObject(ctx, keyHandle)
	if err != nil {
		return err
	}
	wantClass := uint64(ckoPrivateKey)
	if kind == opVerify {
		wantClass = ckoPublicKey
	}
	if o.class != wantClass && !(kind == opVerify && o.class == ckoPrivateKey) {
		return RV(ckrKeyTypeInconsistent)
	}
	if !keyAccepts(o.key, mech.Type, kind) {
		return RV(ckrKeyTypeInconsistent)
	}
	pub, _ := o.key.Public.(*rsa.PublicKey)
	if err := checkParams(mech, pub); err != nil {
		return err
	}
	op := &operation{kind: kind, mech: mech, key: o.key, hash: hashOf(mech.Type)}
	if kind != opVerify {
		op.alwaysAuth = o.key.AlwaysAuthenticate(a.srv.cfg.Policy)
		op.pin = a.takeLoginPIN(op.alwaysAuth)
	}
	if op.hash != 0 {
		op.h = newHash(op.hash)
	}
	s.op = op
	return nil
}

// keyObject finds a key for an operation: a private key's handle that is hidden because
// nobody is logged in answers CKR_USER_NOT_LOGGED_IN, any other unknown one
// CKR_KEY_HANDLE_INVALID.
func (a *App) keyObject(ctx context.Context, h uint64) (*object, error) {
	o, err := a.object(ctx, h)
	if err == RV(ckrObjectHandleInvalid) {
		if a.user != ckuUser && a.privateHandle(h) {
			return nil, RV(ckrUserNotLoggedIn)
		}
		return nil, RV(ckrKeyHandleInvalid)
	}
	return o, err
}

// loginPINLife is how long the PIN of a C_Login(CKU_USER) may serve a PIN-always key without a
// context login: OpenSSH signs right after logging in (pin-caching.md §3.3), not minutes later.
const loginPINLife = 5 * time.Second

// takeLoginPIN hands the PIN of a C_Login(CKU_USER) made just before to the private-key
// operation starting now, when its key is PIN-always (want), and forgets it either way: it
// serves the first private-key operation after the login, or none.
func (a *App) takeLoginPIN(want bool) []byte {
	pin, at := a.loginPIN, a.loginPINAt
	a.loginPIN = nil
	if !want || pin == nil || a.clock().Now().Sub(at) > loginPINLife {
		clear(pin)
		return nil
	}
	return pin
}

// privateHandle reports whether h names a private key object, visible or not.
func (a *App) privateHandle(h uint64) bool {
	for _, o := range a.objects {
		if o.handle == h {
			return o.private
		}
	}
	return h&0xF == 1 // handleOf gives private keys the class nibble 1, whatever the generation
}

// SignInit is C_SignInit.
func (a *App) SignInit(ctx context.Context, h uint64, mech Mechanism, key uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.begin(ctx, h, opSign, mech, key)
}

// sigLen returns the length of a signature with the operation's key.
func sigLen(k middleware.Key) int {
	switch pub := k.Public.(type) {
	case *rsa.PublicKey:
		return pub.Size()
	case *ecdsa.PublicKey:
		return 2 * ((pub.Curve.Params().BitSize + 7) / 8)
	case ed25519.PublicKey:
		return ed25519.SignatureSize
	}
	return 0
}

// tooShort reports whether an output buffer of capacity bytes cannot take n: then the call
// only reports the length, with no error for a size query (capacity 0, a NULL buffer) and
// CKR_BUFFER_TOO_SMALL otherwise, and its operation goes on.
func tooShort(n, capacity int) (bool, error) {
	switch {
	case capacity >= n:
		return false, nil
	case capacity == 0:
		return true, nil
	}
	return true, RV(ckrBufferTooSmall)
}

// Sign is C_Sign. With capacity 0 (a NULL buffer) or too small, it reports the length and keeps
// the operation; otherwise the operation ends, successful or not.
func (a *App) Sign(ctx context.Context, h uint64, data []byte, capacity int) (sig []byte, length int, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, op, err := a.activeOp(h, opSign)
	if err != nil {
		return nil, 0, err
	}
	if op.multipart {
		return nil, 0, RV(ckrOperationActive)
	}
	n := sigLen(op.key)
	if short, err := tooShort(n, capacity); short {
		return nil, n, err
	}
	defer s.endOp() // after the signature: the operation holds its PIN until then
	sig, err = a.sign(ctx, op, data)
	return sig, len(sig), err
}

// SignUpdate is C_SignUpdate.
func (a *App) SignUpdate(h uint64, part []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, op, err := a.activeOp(h, opSign)
	if err != nil {
		return err
	}
	return a.update(s, op, part)
}

// SignFinal is C_SignFinal.
func (a *App) SignFinal(ctx context.Context, h uint64, capacity int) ([]byte, int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, op, err := a.activeOp(h, opSign)
	if err != nil {
		return nil, 0, err
	}
	n := sigLen(op.key)
	if short, err := tooShort(n, capacity); short {
		return nil, n, err
	}
	defer s.endOp()
	op.multipart = false
	sig, err := a.sign(ctx, op, op.buf)
	return sig, len(sig), err
}

// update feeds a part of multi-part input: into the running hash of a hash-and-sign
// mechanism, else into a buffer (EdDSA and raw mechanisms sign the whole input at once).
func (a *App) update(s *session, op *operation, part []byte) error {
	op.multipart = true
	if op.h != nil {
		op.h.Write(part)
		return nil
	}
	switch op.mech.Type {
	case ckmEDDSA:
		if len(op.buf)+len(part) > maxInput {
			s.endOp()
			return RV(ckrDataLenRange)
		}
		op.buf = append(op.buf, part...)
		return nil
	}
	s.endOp()
	return RV(ckrFunctionNotSupported) // raw ECDSA and RSA take their input in one part
}

// maxInput bounds what an application can make the server buffer.
const maxInput = 1 << 20

func (a *App) activeOp(h uint64, kind int) (*session, *operation, error) {
	s, err := a.session(h)
	if err != nil {
		return nil, nil, err
	}
	if s.op == nil || s.op.kind != kind {
		return nil, nil, RV(ckrOperationNotInitialized)
	}
	if s.op.loggedOut {
		s.endOp()
		return nil, nil, RV(ckrUserNotLoggedIn)
	}
	return s, s.op, nil
}

// sign produces the signature of data under the operation's mechanism through the middleware.
// The input is checked and padded first: a signature that cannot be made spends no PIN.
func (a *App) sign(ctx context.Context, op *operation, data []byte) ([]byte, error) {
	input := data
	if op.h != nil {
		if !op.multipart {
			op.h.Write(data)
		}
		input = op.h.Sum(nil)
	}
	var block []byte
	var n int // the ECDSA field size
	switch pub := op.key.Public.(type) {
	case *rsa.PublicKey:
		var err error
		switch op.mech.Type {
		case ckmRSAX509:
			if len(input) > pub.Size() {
				return nil, RV(ckrDataLenRange)
			}
			block = make([]byte, pub.Size())
			copy(block[pub.Size()-len(input):], input)
		case ckmRSAPKCS:
			block, err = rsapad.PKCS1v15Sign(0, input, pub.Size())
		case ckmRSAPKCSPSS, ckmSHA256RSAPKCSPSS, ckmSHA384RSAPKCSPSS, ckmSHA512RSAPKCSPSS:
			block, err = rsapad.PSSSign(rand.Reader, digestOf(op.mech.PSS.Hash), input, int(op.mech.PSS.SaltLen), pub.N.BitLen())
		default:
			block, err = rsapad.PKCS1v15Sign(op.hash, input, pub.Size())
		}
		if err != nil {
			return nil, RV(ckrDataLenRange)
		}
	case *ecdsa.PublicKey:
		n = (pub.Curve.Params().BitSize + 7) / 8
		if len(input) == 0 {
			return nil, RV(ckrDataLenRange)
		}
		block = input[:min(len(input), n)] // the leftmost bits, as FIPS 186-4 §6.4 truncates
	case ed25519.PublicKey:
		block = input
	default:
		return nil, RV(ckrKeyTypeInconsistent)
	}
	t, err := a.tokenFor(ctx)
	if err != nil {
		return nil, err
	}
	if err := a.canAuthorize(op.alwaysAuth, op.pin); err != nil {
		return nil, err
	}
	sig, err := t.SignWithPIN(ctx, op.key.Slot, block, op.pin)
	if err != nil {
		return nil, a.cardError(err)
	}
	if n > 0 {
		return rawECDSA(sig, n)
	}
	return sig, nil
}

// canAuthorize checks that a PIN-always key's operation can get its PIN: its own (a context
// login, or the login's just before), or the middleware's prompt. Without either, PKCS #11
// says CKR_USER_NOT_LOGGED_IN, and the operation ends.
func (a *App) canAuthorize(always bool, pin []byte) error {
	if always && pin == nil && a.srv.cfg.Prompter == nil {
		return RV(ckrUserNotLoggedIn)
	}
	return nil
}

// rawECDSA turns an ASN.1 ECDSA-Sig-Value into r || s, each n bytes (PKCS #11 §2.3.1).
func rawECDSA(der []byte, n int) ([]byte, error) {
	var sig struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal(der, &sig); err != nil || len(rest) > 0 || sig.R.BitLen() > 8*n || sig.S.BitLen() > 8*n {
		return nil, fmt.Errorf("%w: card signature is not an ECDSA-Sig-Value", RV(ckrDeviceError))
	}
	out := make([]byte, 2*n)
	sig.R.FillBytes(out[:n])
	sig.S.FillBytes(out[n:])
	return out, nil
}

// VerifyInit is C_VerifyInit: verification is done on the host with the public key.
func (a *App) VerifyInit(ctx context.Context, h uint64, mech Mechanism, key uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.begin(ctx, h, opVerify, mech, key)
}

// Verify is C_Verify.
func (a *App) Verify(h uint64, data, sig []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, op, err := a.activeOp(h, opVerify)
	if err != nil {
		return err
	}
	defer s.endOp()
	if op.h != nil {
		op.h.Write(data)
		data = op.h.Sum(nil)
	}
	return verify(op, data, sig)
}

// VerifyUpdate is C_VerifyUpdate.
func (a *App) VerifyUpdate(h uint64, part []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, op, err := a.activeOp(h, opVerify)
	if err != nil {
		return err
	}
	return a.update(s, op, part)
}

// VerifyFinal is C_VerifyFinal.
func (a *App) VerifyFinal(h uint64, sig []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, op, err := a.activeOp(h, opVerify)
	if err != nil {
		return err
	}
	defer s.endOp() // it wipes op.buf
	data := op.buf
	if op.h != nil {
		data = op.h.Sum(nil)
	}
	return verify(op, data, sig)
}

func verify(op *operation, data, sig []byte) error {
	switch pub := op.key.Public.(type) {
	case *rsa.PublicKey:
		if len(sig) != pub.Size() {
			return RV(ckrSignatureLenRange)
		}
		var err error
		switch op.mech.Type {
		case ckmRSAPKCS:
			err = rsa.VerifyPKCS1v15(pub, 0, data, sig)
		case ckmRSAX509:
			if len(data) > pub.Size() {
				return RV(ckrDataLenRange)
			}
			want := make([]byte, pub.Size())
			copy(want[pub.Size()-len(data):], data)
			if m := publicOp(pub, sig); m == nil || !bytes.Equal(m, want) {
				err = errors.New("mismatch")
			}
		case ckmRSAPKCSPSS, ckmSHA256RSAPKCSPSS, ckmSHA384RSAPKCSPSS, ckmSHA512RSAPKCSPSS:
			// The salt is exactly as long as the parameters say (checkParams bounded it).
			err = rsapad.PSSVerify(digestOf(op.mech.PSS.Hash), data, publicOp(pub, sig), int(op.mech.PSS.SaltLen), pub.N.BitLen())
		default:
			err = rsa.VerifyPKCS1v15(pub, op.hash, data, sig)
		}
		if err != nil {
			return RV(ckrSignatureInvalid)
		}
		return nil
	case *ecdsa.PublicKey:
		n := (pub.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*n {
			return RV(ckrSignatureLenRange)
		}
		r, s := new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])
		if len(data) > n {
			data = data[:n]
		}
		if !ecdsa.Verify(pub, data, r, s) {
			return RV(ckrSignatureInvalid)
		}
		return nil
	case ed25519.PublicKey:
		if len(sig) != ed25519.SignatureSize {
			return RV(ckrSignatureLenRange)
		}
		if !ed25519.Verify(pub, data, sig) {
			return RV(ckrSignatureInvalid)
		}
		return nil
	}
	return RV(ckrKeyTypeInconsistent)
}

// publicOp is the raw RSA public-key operation on a signature of the modulus' size, as
// pub.Size() bytes; nil when the signature is not below the modulus.
func publicOp(pub *rsa.PublicKey, sig []byte) []byte {
	m := new(big.Int).SetBytes(sig)
	if m.Cmp(pub.N) >= 0 {
		return nil
	}
	return m.Exp(m, big.NewInt(int64(pub.E)), pub.N).FillBytes(make([]byte, pub.Size()))
}

// DecryptInit is C_DecryptInit.
func (a *App) DecryptInit(ctx context.Context, h uint64, mech Mechanism, key uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.begin(ctx, h, opDecrypt, mech, key)
}

// Decrypt is C_Decrypt: the card's raw RSA operation, then the padding removed on the host. A
// size query answers the modulus size, which bounds every plaintext, without using the key.
// When the buffer given is too small for the actual plaintext, the plaintext is kept for the
// call with a larger buffer, which must pass the same ciphertext.
func (a *App) Decrypt(ctx context.Context, h uint64, ct []byte, capacity int) ([]byte, int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, op, err := a.activeOp(h, opDecrypt)
	if err != nil {
		return nil, 0, err
	}
	pub := op.key.Public.(*rsa.PublicKey)
	if len(ct) != pub.Size() {
		s.endOp()
		return nil, 0, RV(ckrEncryptedDataLenRange)
	}
	if capacity == 0 {
		return nil, pub.Size(), nil
	}
	if op.ct == nil || !bytes.Equal(op.ct, ct) {
		clear(op.buf)
		pt, err := a.decrypt(ctx, op, ct)
		if err != nil {
			s.endOp()
			return nil, 0, err
		}
		op.buf, op.ct = pt, slices.Clone(ct)
	}
	if n := len(op.buf); capacity < n {
		return nil, n, RV(ckrBufferTooSmall)
	}
	pt := op.buf
	op.buf = nil // the caller's now
	s.endOp()
	return pt, len(pt), nil
}

// decrypt runs the card's RSA operation on ct and removes the mechanism's padding.
func (a *App) decrypt(ctx context.Context, op *operation, ct []byte) ([]byte, error) {
	t, err := a.tokenFor(ctx)
	if err != nil {
		return nil, err
	}
	if err := a.canAuthorize(op.alwaysAuth, op.pin); err != nil {
		return nil, err
	}
	em, err := t.DecryptWithPIN(ctx, op.key.Slot, ct, op.pin)
	if err != nil {
		return nil, a.cardError(err)
	}
	var pt []byte
	switch op.mech.Type {
	case ckmRSAX509:
		return em, nil
	case ckmRSAPKCSOAEP:
		pt, err = rsapad.OAEPDecrypt(digestOf(op.mech.OAEP.Hash), op.mech.OAEP.Label, em)
	default:
		pt, err = rsapad.PKCS1v15Decrypt(em)
	}
	clear(em)
	if err != nil {
		return nil, RV(ckrEncryptedDataInvalid)
	}
	return pt, nil
}

// DigestInit is C_DigestInit: hashing on the host.
func (a *App) DigestInit(h uint64, mech Mechanism) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.session(h)
	if err != nil {
		return err
	}
	if s.op != nil && !s.op.loggedOut {
		return RV(ckrOperationActive)
	}
	s.endOp()
	hh := digestOf(mech.Type)
	if hh == 0 {
		return RV(ckrMechanismInvalid)
	}
	s.op = &operation{kind: opDigest, mech: mech, hash: hh, h: newHash(hh)}
	return nil
}

// Digest is C_Digest: the last part and the digest in one call.
func (a *App) Digest(h uint64, data []byte, capacity int) ([]byte, int, error) {
	return a.digestFinal(h, data, capacity)
}

// DigestUpdate is C_DigestUpdate.
func (a *App) DigestUpdate(h uint64, part []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, op, err := a.activeOp(h, opDigest)
	if err != nil {
		return err
	}
	op.h.Write(part)
	return nil
}

// DigestFinal is C_DigestFinal.
func (a *App) DigestFinal(h uint64, capacity int) ([]byte, int, error) {
	return a.digestFinal(h, nil, capacity)
}

// digestFinal hashes a last part, if any, and ends the digest; a length query (or a buffer
// that is too small) leaves the operation and its data as they were.
func (a *App) digestFinal(h uint64, last []byte, capacity int) ([]byte, int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, op, err := a.activeOp(h, opDigest)
	if err != nil {
		return nil, 0, err
	}
	n := op.hash.Size()
	if short, err := tooShort(n, capacity); short {
		return nil, n, err
	}
	s.endOp()
	op.h.Write(last)
	return op.h.Sum(nil), n, nil
}

// GenerateKeyPair is C_GenerateKeyPair into a PIV slot: the slot from CKA_ID (01 = 9A, 02 = 9C,
// ...; else the first empty one), the key type from the mechanism and CKA_EC_PARAMS or
// CKA_MODULUS_BITS, the PIN policy from CKA_ALWAYS_AUTHENTICATE (else the slot's default). It
// needs the management key: a security officer's login, or the card's factory key.
func (a *App) GenerateKeyPair(ctx context.Context, h uint64, mech Mechanism, pubTmpl, privTmpl []Attribute) (pub, priv uint64, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.session(h)
	if err != nil {
		return 0, 0, err
	}
	if !s.rw {
		return 0, 0, RV(ckrSessionReadOnly)
	}
	if a.user < 0 {
		return 0, 0, RV(ckrUserNotLoggedIn)
	}
	attr := func(tmpl []Attribute, t uint32) ([]byte, bool) {
		for _, x := range tmpl {
			if x.Type == t {
				return x.Value, true
			}
		}
		return nil, false
	}
	var alg byte
	switch mech.Type {
	case ckmECKeyPairGen, ckmECEdwardsKeyPairGen:
		params, ok := attr(pubTmpl, ckaECParams)
		if !ok {
			return 0, 0, RV(ckrTemplateIncomplete)
		}
		if alg, ok = curveOf(params); !ok {
			return 0, 0, RV(ckrAttributeValueInvalid)
		}
		if (mech.Type == ckmECEdwardsKeyPairGen) != (alg == pivclient.AlgEd25519) || alg == pivclient.AlgX25519 {
			return 0, 0, RV(ckrTemplateInconsistent)
		}
	case ckmRSAPKCSKeyPairGen:
		bits, ok := attr(pubTmpl, ckaModulusBits)
		if !ok || len(bits) != 8 {
			return 0, 0, RV(ckrTemplateIncomplete)
		}
		switch binary.LittleEndian.Uint64(bits) {
		case 1024:
			alg = pivclient.AlgRSA1024
		case 2048:
			alg = pivclient.AlgRSA2048
		case 3072:
			alg = pivclient.AlgRSA3072
		case 4096:
			alg = pivclient.AlgRSA4096
		default:
			return 0, 0, RV(ckrAttributeValueInvalid)
		}
		if e, ok := attr(pubTmpl, ckaPublicExponent); ok && new(big.Int).SetBytes(e).Int64() != 65537 {
			return 0, 0, RV(ckrAttributeValueInvalid)
		}
	default:
		return 0, 0, RV(ckrMechanismInvalid)
	}
	if err := a.loadObjects(ctx); err != nil {
		return 0, 0, err
	}
	slot := byte(0)
	id, hasID := attr(privTmpl, ckaID)
	if !hasID {
		id, hasID = attr(pubTmpl, ckaID)
	}
	slots := middleware.KeySlots()
	if hasID {
		if len(id) != 1 || id[0] < 1 || int(id[0]) > len(slots) {
			return 0, 0, RV(ckrAttributeValueInvalid)
		}
		slot = slots[id[0]-1]
	} else {
		used := map[byte]bool{}
		for _, o := range a.objects {
			used[o.key.Slot] = true
		}
		for _, sl := range slots {
			if !used[sl] {
				slot = sl
				break
			}
		}
		if slot == 0 {
			return 0, 0, RV(ckrDeviceMemory)
		}
	}
	pinPolicy := byte(pivclient.PINPolicyDefault)
	if v, ok := attr(privTmpl, ckaAlwaysAuthenticate); ok && len(v) == 1 {
		pinPolicy = pivclient.PINPolicyOnce
		if v[0] != 0 {
			pinPolicy = pivclient.PINPolicyAlways
		}
	}
	t, err := a.tokenFor(ctx)
	if err != nil {
		return 0, 0, err
	}
	if _, err := t.GenerateKey(ctx, slot, alg, pinPolicy, pivclient.TouchPolicyDefault, a.soKey); err != nil {
		if errors.Is(err, middleware.ErrManagementKey) {
			return 0, 0, RV(ckrUserNotLoggedIn)
		}
		return 0, 0, a.cardError(err)
	}
	a.objects = nil
	if err := a.loadObjects(ctx); err != nil {
		return 0, 0, err
	}
	for _, o := range a.objects {
		if o.key.Slot == slot && o.class == ckoPrivateKey {
			priv = o.handle
		}
	}
	return handleOf(slot, ckoPublicKey), priv, nil
}

// hexKey decodes a security officer's PIN: the management key in hex.
func hexKey(pin []byte) ([]byte, error) {
	switch len(pin) {
	case 32, 48, 64:
	default:
		return nil, errors.New("not a management key")
	}
	k := make([]byte, len(pin)/2)
	if _, err := hex.Decode(k, pin); err != nil { // no string copy of the key to linger
		clear(k)
		return nil, errors.New("not a management key")
	}
	return k, nil
}

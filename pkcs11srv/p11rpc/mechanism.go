package p11rpc

import "fmt"

// Mechanism is a CK_MECHANISM as an M argument carries it.
type Mechanism struct {
	// Type is the CK_MECHANISM_TYPE, 32 bits on the wire; NullMechanism for a NULL pointer.
	Type uint32
	// Param is the decoded parameter, or nil when the mechanism takes none or the client
	// passed a NULL pParameter.
	Param MechanismParam
}

// NullMechanism is the type p11-kit 0.25.3 and later send for a NULL CK_MECHANISM_PTR, which
// PKCS#11 3.0 uses to cancel an operation in C_*Init; no parameter follows (§2.6). For clients
// that offered version 0 it is an ordinary (vendor) type.
const NullMechanism uint32 = 0xffffffff

// MechanismParam is a decoded mechanism parameter: PSSParams, OAEPParams, ECDH1DeriveParams
// or RawParam.
type MechanismParam interface {
	mechanismParam()
}

// PSSParams is CK_RSA_PKCS_PSS_PARAMS, the parameter of CKM_RSA_PKCS_PSS and, from p11-kit
// 0.25 on, of CKM_SHA*_RSA_PKCS_PSS: u64 hashAlg, u64 mgf, u64 sLen on the wire.
type PSSParams struct {
	HashAlg uint64
	MGF     uint64
	SaltLen uint64
}

// OAEPParams is CK_RSA_PKCS_OAEP_PARAMS, the parameter of CKM_RSA_PKCS_OAEP: u64 hashAlg,
// u64 mgf, u64 source, then pSourceData as a raw byte array (nil for NULL).
type OAEPParams struct {
	HashAlg    uint64
	MGF        uint64
	Source     uint64
	SourceData []byte
}

// ECDH1DeriveParams is CK_ECDH1_DERIVE_PARAMS, the parameter of CKM_ECDH1_DERIVE from
// p11-kit 0.25 on: u64 kdf, then pSharedData and pPublicData as raw byte arrays (nil for NULL).
type ECDH1DeriveParams struct {
	KDF        uint64
	SharedData []byte
	PublicData []byte
}

// RawParam is a parameter sent as a raw byte array: what clients that offered 0 or 1 send for
// mechanisms without a typed layout. From p11-kit 0.24.1 it is never more than NULL (nil
// Param), since the client drops the parameters of such mechanisms.
type RawParam []byte

func (PSSParams) mechanismParam()         {}
func (OAEPParams) mechanismParam()        {}
func (ECDH1DeriveParams) mechanismParam() {}
func (RawParam) mechanismParam()          {}

// Mechanism types whose parameters have a typed layout here.
const (
	ckmRSAPKCSOAEP      = 0x09
	ckmRSAPKCSPSS       = 0x0d
	ckmSHA1RSAPSS       = 0x0e
	ckmSHA256RSAPSS     = 0x43
	ckmSHA384RSAPSS     = 0x44
	ckmSHA512RSAPSS     = 0x45
	ckmSHA224RSAPSS     = 0x47
	ckmECDH1Derive      = 0x1050
	ckmIBMECX25519      = 0x8001001b
	ckmIBMECX448        = 0x8001001e
	ckmIBMKyber         = 0x80010024
	ckmIBMBTCDerive     = 0x80070001
	ckmIBMECDSAOther    = 0x80010031
	ckmIBMAttrBoundWrap = 0x80020004
)

type paramLayout uint8

const (
	layoutRaw   paramLayout = iota // a raw byte array
	layoutPSS                      // PSSParams
	layoutOAEP                     // OAEPParams
	layoutECDH                     // ECDH1DeriveParams
	layoutOther                    // typed by the client, not decoded here
)

// otherLayouts names the mechanisms p11-kit 0.25.0 and later serialise with a typed layout
// this package does not decode (p11_rpc_mechanism_serializers in p11-kit/rpc-message.c).
var otherLayouts = map[uint32]string{
	0x1082: "CKM_AES_CBC", 0x1085: "CKM_AES_CBC_PAD", 0x2104: "CKM_AES_OFB",
	0x2108: "CKM_AES_CFB1", 0x2106: "CKM_AES_CFB8", 0x2105: "CKM_AES_CFB64",
	0x2107: "CKM_AES_CFB128", 0x1089: "CKM_AES_CTS", 0x1086: "CKM_AES_CTR",
	0x1087: "CKM_AES_GCM", 0x0122: "CKM_DES_CBC", 0x0125: "CKM_DES_CBC_PAD",
	0x0133: "CKM_DES3_CBC", 0x0136: "CKM_DES3_CBC_PAD", 0x0153: "CKM_DES_CFB8",
	0x0152: "CKM_DES_CFB64", 0x0150: "CKM_DES_OFB64", 0x0222: "CKM_SHA_1_HMAC_GENERAL",
	0x0257: "CKM_SHA224_HMAC_GENERAL", 0x0252: "CKM_SHA256_HMAC_GENERAL",
	0x0262: "CKM_SHA384_HMAC_GENERAL", 0x0272: "CKM_SHA512_HMAC_GENERAL",
	0x004a: "CKM_SHA512_224_HMAC_GENERAL", 0x004e: "CKM_SHA512_256_HMAC_GENERAL",
	0x1084: "CKM_AES_MAC_GENERAL", 0x108b: "CKM_AES_CMAC_GENERAL",
	0x0135: "CKM_DES3_MAC_GENERAL", 0x0137: "CKM_DES3_CMAC_GENERAL",
	0x0021:              "CKM_DH_PKCS_DERIVE",
	ckmIBMAttrBoundWrap: "CKM_IBM_ATTRIBUTEBOUND_WRAP",
}

// otherLayouts2 are typed layouts added in p11-kit 0.25.6.
var otherLayouts2 = map[uint32]string{
	ckmIBMECDSAOther: "CKM_IBM_ECDSA_OTHER",
	ckmIBMBTCDerive:  "CKM_IBM_BTC_DERIVE",
	ckmIBMKyber:      "CKM_IBM_KYBER",
}

// mechanismName names typ for error messages.
func mechanismName(typ uint32) string {
	name := ""
	switch typ {
	case ckmRSAPKCSOAEP:
		name = "CKM_RSA_PKCS_OAEP"
	case ckmRSAPKCSPSS:
		name = "CKM_RSA_PKCS_PSS"
	case ckmECDH1Derive:
		name = "CKM_ECDH1_DERIVE"
	default:
		if n, ok := otherLayouts[typ]; ok {
			name = n
		} else if n, ok := otherLayouts2[typ]; ok {
			name = n
		}
	}
	if name == "" {
		return fmt.Sprintf("mechanism %#x", typ)
	}
	return fmt.Sprintf("%s (%#x)", name, typ)
}

// paramLayoutOf returns how a client of protocol p lays out the parameter of typ.
func paramLayoutOf(typ uint32, p Protocol) paramLayout {
	if p == Protocol0 {
		// p11-kit 0.24.1 knows two parameter types.
		switch typ {
		case ckmRSAPKCSPSS:
			return layoutPSS
		case ckmRSAPKCSOAEP:
			return layoutOAEP
		}
		return layoutRaw
	}
	switch typ {
	case ckmRSAPKCSPSS, ckmSHA1RSAPSS, ckmSHA224RSAPSS, ckmSHA256RSAPSS, ckmSHA384RSAPSS, ckmSHA512RSAPSS:
		return layoutPSS
	case ckmRSAPKCSOAEP:
		return layoutOAEP
	case ckmECDH1Derive, ckmIBMECX25519, ckmIBMECX448:
		return layoutECDH
	}
	if _, ok := otherLayouts[typ]; ok {
		return layoutOther
	}
	if _, ok := otherLayouts2[typ]; ok && p >= Protocol2 {
		return layoutOther
	}
	return layoutRaw
}

// noParameterMechanisms are the mechanisms p11-kit 0.25.0 and later know take no parameter
// (mechanism_has_no_parameters in p11-kit/rpc-message.c). Clients that offered 2 send no
// parameter bytes at all for them.
var noParameterMechanisms = func() map[uint32]bool {
	m := make(map[uint32]bool)
	for _, t := range []uint32{
		// RSA, DSA, EC, DH
		0x0000, 0x000a, 0x0001, 0x0002, 0x0003, 0x000b, 0x0004, 0x0005, 0x0006, 0x0046,
		0x0040, 0x0041, 0x0042, 0x0007, 0x0008, 0x000c, 0x0010, 0x2000, 0x0011, 0x0012,
		0x1020, 0x1040, 0x1041, 0x1042, 0x1043, 0x1044, 0x1045, 0x1046, 0x0020, 0x2001,
		0x0030, 0x2002, 0x1010,
		// secret key generation
		0x0350, 0x0100, 0x0110, 0x0111, 0x0330, 0x1080, 0x0120, 0x0130, 0x0131, 0x0140,
		0x0300, 0x0310, 0x0320, 0x0340, 0x0370, 0x0374, 0x1000, 0x1030, 0x1060,
		// ECB, MAC
		0x1081, 0x1083, 0x108a, 0x0101, 0x0121, 0x0132, 0x0141, 0x0301, 0x0311, 0x0321,
		0x0331, 0x0341, 0x0103, 0x0123, 0x0134, 0x0138, 0x0143, 0x0303, 0x0313, 0x0333,
		0x0343, 0x0380, 0x0381, 0x1008, 0x1036, 0x1065,
		// digests, HMAC, key derivation by digest
		0x0200, 0x0201, 0x0210, 0x0211, 0x0220, 0x0221, 0x0392, 0x0255, 0x0256, 0x0396,
		0x0250, 0x0251, 0x0393, 0x0260, 0x0261, 0x0394, 0x0270, 0x0271, 0x0395, 0x0050,
		0x0051, 0x0053, 0x0048, 0x0049, 0x004b, 0x004c, 0x004d, 0x004f, 0x1070, 0x0230,
		0x0231, 0x0240, 0x0241, 0x0400,
		// IBM vendor mechanisms
		0x80010001, 0x80010002, 0x80010003, 0x80010004, 0x80010007, 0x80010023,
		0x80010025, 0x80010026, 0x80010027, 0x80010028, 0x8001001c, 0x8001001f,
	} {
		m[t] = true
	}
	return m
}()

// mechanism reads an M argument.
func (r *reader) mechanism() (Mechanism, bool) {
	var m Mechanism
	if !r.u32(&m.Type) {
		return m, false
	}
	if r.proto >= Protocol1 && m.Type == NullMechanism {
		return m, true
	}
	layout := paramLayoutOf(m.Type, r.proto)
	if r.proto >= Protocol2 {
		if noParameterMechanisms[m.Type] {
			return m, true
		}
		present, ok := r.flag("parameter presence")
		if !ok || !present {
			return m, ok
		}
		if layout == layoutRaw {
			// Only a client with its mechanism list overridden for tests sends these.
			layout = layoutOther
		}
	}
	var ok bool
	m.Param, ok = r.param(m.Type, layout)
	return m, ok
}

// param reads a mechanism parameter laid out as layout.
func (r *reader) param(typ uint32, layout paramLayout) (MechanismParam, bool) {
	switch layout {
	case layoutPSS:
		var p PSSParams
		ok := r.u64(&p.HashAlg) && r.u64(&p.MGF) && r.u64(&p.SaltLen)
		return p, ok
	case layoutOAEP:
		var p OAEPParams
		if !r.u64(&p.HashAlg) || !r.u64(&p.MGF) || !r.u64(&p.Source) {
			return nil, false
		}
		var ok bool
		p.SourceData, ok = r.raw()
		return p, ok
	case layoutECDH:
		var p ECDH1DeriveParams
		if !r.u64(&p.KDF) {
			return nil, false
		}
		var ok bool
		if p.SharedData, ok = r.raw(); !ok {
			return nil, false
		}
		p.PublicData, ok = r.raw()
		return p, ok
	case layoutRaw:
		b, ok := r.raw()
		if !ok || b == nil {
			return nil, ok
		}
		return RawParam(b), true
	}
	r.fail(ErrUnsupportedMechanism, "%s: the layout of its parameter is not known here", mechanismName(typ))
	return nil, false
}

// mechanism writes an M argument.
func (w *writer) mechanism(m Mechanism) {
	if w.proto >= Protocol1 && m.Type == NullMechanism {
		if m.Param != nil {
			w.fail(ErrInvalidArgument, "the NULL mechanism has no parameter")
			return
		}
		w.b.AddUint32(m.Type)
		return
	}
	layout := paramLayoutOf(m.Type, w.proto)
	if w.proto >= Protocol2 {
		if noParameterMechanisms[m.Type] {
			if m.Param != nil {
				w.fail(ErrInvalidArgument, "%s takes no parameter", mechanismName(m.Type))
				return
			}
			w.b.AddUint32(m.Type)
			return
		}
		if m.Param == nil {
			w.b.AddUint32(m.Type)
			w.b.AddUint8(0)
			return
		}
		if layout == layoutRaw {
			layout = layoutOther
		}
		if !w.checkParam(m, layout) {
			return
		}
		w.b.AddUint32(m.Type)
		w.b.AddUint8(1)
		w.param(m.Param)
		return
	}
	if layout == layoutRaw && m.Param == nil {
		w.b.AddUint32(m.Type)
		w.b.AddUint32(nullLength)
		return
	}
	if !w.checkParam(m, layout) {
		return
	}
	w.b.AddUint32(m.Type)
	w.param(m.Param)
}

// checkParam checks that m.Param has the Go type of layout.
func (w *writer) checkParam(m Mechanism, layout paramLayout) bool {
	ok := false
	switch layout {
	case layoutPSS:
		_, ok = m.Param.(PSSParams)
	case layoutOAEP:
		_, ok = m.Param.(OAEPParams)
	case layoutECDH:
		_, ok = m.Param.(ECDH1DeriveParams)
	case layoutRaw:
		_, ok = m.Param.(RawParam)
	default:
		w.fail(ErrUnsupportedMechanism, "%s: the layout of its parameter is not known here", mechanismName(m.Type))
		return false
	}
	if !ok {
		w.fail(ErrInvalidArgument, "%s cannot carry a parameter of type %T", mechanismName(m.Type), m.Param)
	}
	return ok
}

// param writes a parameter whose Go type checkParam accepted.
func (w *writer) param(p MechanismParam) {
	switch p := p.(type) {
	case PSSParams:
		w.b.AddUint64(p.HashAlg)
		w.b.AddUint64(p.MGF)
		w.b.AddUint64(p.SaltLen)
	case OAEPParams:
		w.b.AddUint64(p.HashAlg)
		w.b.AddUint64(p.MGF)
		w.b.AddUint64(p.Source)
		w.raw(p.SourceData)
	case ECDH1DeriveParams:
		w.b.AddUint64(p.KDF)
		w.raw(p.SharedData)
		w.raw(p.PublicData)
	case RawParam:
		if p == nil {
			p = RawParam{}
		}
		w.raw(p)
	}
}

// paramUpdate writes the P argument of C_DeriveKey2 (p11_rpc_buffer_add_mech_param_update in
// p11-kit 0.25.6): nothing for a mechanism without parameter, else a presence byte and, for
// the two IBM mechanisms that return data through their parameter, that data.
func (w *writer) paramUpdate(m Mechanism) {
	if noParameterMechanisms[m.Type] {
		return
	}
	if m.Type == ckmIBMKyber || m.Type == ckmIBMBTCDerive {
		w.fail(ErrUnsupportedMechanism, "%s: its parameter update is not supported", mechanismName(m.Type))
		return
	}
	if m.Param == nil {
		w.b.AddUint8(0)
	} else {
		w.b.AddUint8(1)
	}
}

// paramUpdate reads the P argument of a C_DeriveKey2 reply.
func (r *reader) paramUpdate(typ uint32) (present, ok bool) {
	if noParameterMechanisms[typ] {
		return false, true
	}
	if typ == ckmIBMKyber || typ == ckmIBMBTCDerive {
		r.fail(ErrUnsupportedMechanism, "%s: its parameter update is not supported", mechanismName(typ))
		return false, false
	}
	return r.flag("parameter presence")
}

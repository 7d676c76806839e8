package p11rpc

import (
	"encoding/binary"
	"fmt"
)

// Attribute is one CK_ATTRIBUTE of a template, its value in host-memory form: the bytes a C
// module would find at pValue on x86_64 Linux, so that the PKCS#11 layer can treat it as C
// does. By the class of its type (§2.3):
//
//	CK_BBOOL types             1 byte
//	CK_ULONG types             8 bytes, little-endian
//	CKA_ALLOWED_MECHANISMS     8 little-endian bytes per mechanism
//	CKA_START_DATE, END_DATE   8 bytes YYYYMMDD, or none
//	every other type           the bytes as sent, including unlisted CK_ULONG types (NSS
//	                           trust, CKA_PROFILE_ID), which clients send as 8 LE bytes
//
// Value is nil when the client passed a NULL pValue (with ulValueLen 0).
type Attribute struct {
	Type  uint32
	Value []byte
}

// UlongAttribute returns a CK_ULONG attribute.
func UlongAttribute(typ uint32, v uint64) Attribute {
	return Attribute{Type: typ, Value: binary.LittleEndian.AppendUint64(nil, v)}
}

// BoolAttribute returns a CK_BBOOL attribute.
func BoolAttribute(typ uint32, v bool) Attribute {
	b := byte(0)
	if v {
		b = 1
	}
	return Attribute{Type: typ, Value: []byte{b}}
}

// BytesAttribute returns an attribute holding b, which it does not copy.
func BytesAttribute(typ uint32, b []byte) Attribute {
	return Attribute{Type: typ, Value: b}
}

// Ulong returns the value as a CK_ULONG; ok is false unless it is 8 bytes.
func (a Attribute) Ulong() (v uint64, ok bool) {
	if len(a.Value) != 8 {
		return 0, false
	}
	return binary.LittleEndian.Uint64(a.Value), true
}

// Bool returns the value as a CK_BBOOL (any non-zero byte is true); ok is false unless it
// is 1 byte.
func (a Attribute) Bool() (v, ok bool) {
	if len(a.Value) != 1 {
		return false, false
	}
	return a.Value[0] != 0, true
}

// AttributeRequest is one entry of an fA argument: an attribute C_GetAttributeValue asks for.
type AttributeRequest struct {
	Type uint32
	// Capacity is the caller's ulValueLen: 0 when pValue is NULL (a size query). It is
	// attacker-controlled: compare with it, never allocate by it.
	Capacity uint32
}

// ResultKind says what a C_GetAttributeValue reply tells about one attribute (§2.5).
type ResultKind uint8

const (
	// ResultValue carries the value: the caller's buffer was large enough.
	ResultValue ResultKind = iota
	// ResultSizeOnly carries the value's length only: the caller passed a NULL pValue, or
	// its buffer was too small (then the call's rv is CKR_BUFFER_TOO_SMALL).
	ResultSizeOnly
	// ResultUnavailable sets ulValueLen to CK_UNAVAILABLE_INFORMATION: the attribute is
	// absent (rv CKR_ATTRIBUTE_TYPE_INVALID), sensitive (CKR_ATTRIBUTE_SENSITIVE) or does
	// not fit the caller's buffer (CKR_BUFFER_TOO_SMALL).
	ResultUnavailable
)

// AttributeResult is one entry of a C_GetAttributeValue reply.
type AttributeResult struct {
	Type uint32
	Kind ResultKind
	// Value is the value in host-memory form (see Attribute), for ResultValue.
	Value []byte
	// Size is the value's length in host-memory form, for ResultSizeOnly: 1 for CK_BBOOL,
	// 8 for CK_ULONG, 8 per mechanism of CKA_ALLOWED_MECHANISMS.
	Size uint32
}

// valueClass is how the client's type table encodes an attribute value (§2.3).
type valueClass uint8

const (
	classBytes valueClass = iota
	classBool
	classUlong
	classTemplate
	classMechanisms
	classDate
)

// Attribute types the codec treats specially.
const (
	ckaAllowedMechanisms = 0x40000600
	ckfArrayAttribute    = 0x40000000
	ckaVendorDefined     = 0x80000000
)

// isNestedTemplate reports whether typ is an array of attributes: a standard type with
// CKF_ARRAY_ATTRIBUTE set, other than CKA_ALLOWED_MECHANISMS (an array of CK_MECHANISM_TYPE).
// Vendor types are excluded although many carry the bit by accident of their prefix: NSS's
// 0xCE53xxxx and p11-kit's own 0xD84447xx are plain values (common/attrs.h in p11-kit says so).
func isNestedTemplate(typ uint32) bool {
	return typ&ckfArrayAttribute != 0 && typ&ckaVendorDefined == 0 && typ != ckaAllowedMechanisms
}

type attrInfo struct {
	name  string
	class valueClass
}

// attrTable0 is the type table of p11-kit 0.24.1 (map_attribute_to_value_type in
// p11-kit/rpc-message.c), without the byte-array entries, which are the default anyway.
var attrTable0 = map[uint32]attrInfo{
	0x001: {"CKA_TOKEN", classBool},
	0x002: {"CKA_PRIVATE", classBool},
	0x086: {"CKA_TRUSTED", classBool},
	0x103: {"CKA_SENSITIVE", classBool},
	0x104: {"CKA_ENCRYPT", classBool},
	0x105: {"CKA_DECRYPT", classBool},
	0x106: {"CKA_WRAP", classBool},
	0x107: {"CKA_UNWRAP", classBool},
	0x108: {"CKA_SIGN", classBool},
	0x109: {"CKA_SIGN_RECOVER", classBool},
	0x10a: {"CKA_VERIFY", classBool},
	0x10b: {"CKA_VERIFY_RECOVER", classBool},
	0x10c: {"CKA_DERIVE", classBool},
	0x162: {"CKA_EXTRACTABLE", classBool},
	0x163: {"CKA_LOCAL", classBool},
	0x164: {"CKA_NEVER_EXTRACTABLE", classBool},
	0x165: {"CKA_ALWAYS_SENSITIVE", classBool},
	0x170: {"CKA_MODIFIABLE", classBool},
	0x171: {"CKA_COPYABLE", classBool},
	0x200: {"CKA_SECONDARY_AUTH", classBool},
	0x202: {"CKA_ALWAYS_AUTHENTICATE", classBool},
	0x210: {"CKA_WRAP_WITH_TRUSTED", classBool},
	0x301: {"CKA_RESET_ON_INIT", classBool},
	0x302: {"CKA_HAS_RESET", classBool},
	0x405: {"CKA_COLOR", classBool},

	0x000: {"CKA_CLASS", classUlong},
	0x080: {"CKA_CERTIFICATE_TYPE", classUlong},
	0x087: {"CKA_CERTIFICATE_CATEGORY", classUlong},
	0x088: {"CKA_JAVA_MIDP_SECURITY_DOMAIN", classUlong},
	0x100: {"CKA_KEY_TYPE", classUlong},
	0x121: {"CKA_MODULUS_BITS", classUlong},
	0x133: {"CKA_PRIME_BITS", classUlong},
	0x134: {"CKA_SUB_PRIME_BITS", classUlong},
	0x160: {"CKA_VALUE_BITS", classUlong},
	0x161: {"CKA_VALUE_LEN", classUlong},
	0x166: {"CKA_KEY_GEN_MECHANISM", classUlong},
	0x201: {"CKA_AUTH_PIN_FLAGS", classUlong},
	0x300: {"CKA_HW_FEATURE_TYPE", classUlong},
	0x400: {"CKA_PIXEL_X", classUlong},
	0x401: {"CKA_PIXEL_Y", classUlong},
	0x402: {"CKA_RESOLUTION", classUlong},
	0x403: {"CKA_CHAR_ROWS", classUlong},
	0x404: {"CKA_CHAR_COLUMNS", classUlong},
	0x406: {"CKA_BITS_PER_PIXEL", classUlong},
	0x500: {"CKA_MECHANISM_TYPE", classUlong},

	0x40000211: {"CKA_WRAP_TEMPLATE", classTemplate},
	0x40000212: {"CKA_UNWRAP_TEMPLATE", classTemplate},
	0x40000213: {"CKA_DERIVE_TEMPLATE", classTemplate},
	0x40000600: {"CKA_ALLOWED_MECHANISMS", classMechanisms},
	0x110:      {"CKA_START_DATE", classDate},
	0x111:      {"CKA_END_DATE", classDate},
}

// attrTable1 holds what p11-kit 0.25.0 added to the table: IBM vendor types.
var attrTable1 = map[uint32]attrInfo{
	0x80010001: {"CKA_IBM_RESTRICTABLE", classBool},
	0x80010002: {"CKA_IBM_NEVER_MODIFIABLE", classBool},
	0x80010003: {"CKA_IBM_RETAINKEY", classBool},
	0x80010004: {"CKA_IBM_ATTRBOUND", classBool},
	0x80010008: {"CKA_IBM_USE_AS_DATA", classBool},
	0x8001000c: {"CKA_IBM_PROTKEY_EXTRACTABLE", classBool},
	0x8001000d: {"CKA_IBM_PROTKEY_NEVER_EXTRACTABLE", classBool},
	0x80010005: {"CKA_IBM_KEYTYPE", classUlong},
	0x8001000a: {"CKA_IBM_STD_COMPLIANCE1", classUlong},
	0x800d0001: {"CKA_IBM_DILITHIUM_KEYFORM", classUlong},
}

// attrTable2 holds what p11-kit 0.25.6 and later added. (0.25.6 and 0.25.7 also encoded
// CKA_NSS_MOZILLA_CA_POLICY and CKA_X_DISTRUSTED as CK_BBOOL; 0.25.8 reverted that, and the
// version byte cannot tell them apart, so the 0.25.8 table is used.)
var attrTable2 = map[uint32]attrInfo{
	0x800d0009: {"CKA_IBM_KYBER_KEYFORM", classUlong},
	0x800d0101: {"CKA_IBM_CCA_AES_KEY_MODE", classUlong},
}

// lookupAttribute returns what the type table of protocol p says about typ.
func lookupAttribute(typ uint32, p Protocol) (attrInfo, bool) {
	if info, ok := attrTable0[typ]; ok {
		return info, true
	}
	if p >= Protocol1 {
		if info, ok := attrTable1[typ]; ok {
			return info, true
		}
	}
	if p >= Protocol2 {
		if info, ok := attrTable2[typ]; ok {
			return info, true
		}
	}
	return attrInfo{}, false
}

// attributeClass returns how a client of protocol p encodes a value of type typ.
func attributeClass(typ uint32, p Protocol) valueClass {
	if isNestedTemplate(typ) {
		return classTemplate
	}
	info, _ := lookupAttribute(typ, p)
	return info.class // classBytes for unlisted types
}

// attributeName names typ for error messages.
func attributeName(typ uint32) string {
	if info, ok := lookupAttribute(typ, Protocol2); ok {
		return fmt.Sprintf("%s (%#x)", info.name, typ)
	}
	return fmt.Sprintf("attribute type %#x", typ)
}

// attributeValue reads the value that follows an attribute's length and returns it in
// host-memory form; null reports a NULL byte array or date (0xffffffff).
func (r *reader) attributeValue(i int, typ uint32) (v []byte, null, ok bool) {
	switch attributeClass(typ, r.proto) {
	case classTemplate:
		r.fail(ErrNestedTemplate, "attribute %d is %s", i, attributeName(typ))
		return nil, false, false
	case classBool:
		var b uint8
		if !r.u8(&b) {
			return nil, false, false
		}
		return []byte{b}, false, true
	case classUlong:
		var x uint64
		if !r.u64(&x) {
			return nil, false, false
		}
		return binary.LittleEndian.AppendUint64(nil, x), false, true
	case classMechanisms:
		n, ok := r.count(8)
		if !ok {
			return nil, false, false
		}
		v = make([]byte, 0, 8*n)
		for range n {
			var x uint64
			if !r.u64(&x) {
				return nil, false, false
			}
			v = binary.LittleEndian.AppendUint64(v, x)
		}
		return v, false, true
	case classDate:
		v, ok := r.raw()
		if !ok {
			return nil, false, false
		}
		if len(v) != 0 && len(v) != 8 {
			r.fail(ErrInvalidAttribute, "attribute %d, %s, is a date of %d bytes, not 8", i, attributeName(typ), len(v))
			return nil, false, false
		}
		return v, v == nil, true
	default:
		v, ok := r.raw()
		if !ok {
			return nil, false, false
		}
		return v, v == nil, true
	}
}

// attributeResult reads one attribute of a C_GetAttributeValue reply into out, interpreting it
// against req (nil: a buffer large enough for anything).
func (r *reader) attributeResult(i int, req *AttributeRequest, out *AttributeResult) bool {
	if !r.u32(&out.Type) {
		return false
	}
	typ := out.Type
	if req != nil && typ != req.Type {
		r.fail(ErrMalformed, "attribute %d is %s, the request asked for %s", i, attributeName(typ), attributeName(req.Type))
		return false
	}
	if isNestedTemplate(typ) {
		r.fail(ErrNestedTemplate, "attribute %d is %s", i, attributeName(typ))
		return false
	}
	valid, ok := r.flag("valid")
	if !ok {
		return false
	}
	if !valid {
		out.Kind = ResultUnavailable
		return true
	}
	var length uint32
	if !r.u32(&length) {
		return false
	}
	v, _, ok := r.attributeValue(i, typ)
	if !ok {
		return false
	}
	if req != nil && (req.Capacity == 0 || length > req.Capacity) {
		// The client decodes the value only to check it fits the length it reports.
		if uint64(len(v)) > uint64(length) {
			r.fail(ErrMalformed, "attribute %d, %s, reports length %d but carries %d value bytes", i, attributeName(typ), length, len(v))
			return false
		}
		out.Kind, out.Size = ResultSizeOnly, length
		return true
	}
	if uint64(len(v)) != uint64(length) {
		r.fail(ErrMalformed, "attribute %d, %s, has length %d but %d value bytes", i, attributeName(typ), length, len(v))
		return false
	}
	out.Kind, out.Value = ResultValue, v
	return true
}

// attributeValue writes one attribute of a template: type, valid = 1, length and value.
func (w *writer) attributeValue(i int, typ uint32, v []byte) {
	if w.err != nil {
		return
	}
	class := attributeClass(typ, w.proto)
	if !w.checkValue(i, typ, class, v) {
		return
	}
	w.b.AddUint32(typ)
	w.b.AddUint8(1)
	w.b.AddUint32(uint32(len(v)))
	switch class {
	case classBool:
		w.b.AddUint8(v[0])
	case classUlong:
		w.b.AddUint64(binary.LittleEndian.Uint64(v))
	case classMechanisms:
		w.b.AddUint32(uint32(len(v) / 8))
		for j := 0; j < len(v); j += 8 {
			w.b.AddUint64(binary.LittleEndian.Uint64(v[j:]))
		}
	default:
		w.raw(v)
	}
}

// checkValue checks that a host-memory value fits the class of its type.
func (w *writer) checkValue(i int, typ uint32, class valueClass, v []byte) bool {
	bad := ""
	switch {
	case class == classTemplate:
		w.fail(ErrNestedTemplate, "attribute %d is %s", i, attributeName(typ))
		return false
	case len(v) > maxWireLen:
		bad = "is too long"
	case class == classBool && len(v) != 1:
		bad = "must be 1 byte (CK_BBOOL)"
	case class == classUlong && len(v) != 8:
		bad = "must be 8 bytes (CK_ULONG)"
	case class == classMechanisms && len(v)%8 != 0:
		bad = "must be a multiple of 8 bytes (CK_MECHANISM_TYPE array)"
	case class == classDate && len(v) != 0 && len(v) != 8:
		bad = "must be 0 or 8 bytes (CK_DATE)"
	}
	if bad != "" {
		w.fail(ErrInvalidAttribute, "attribute %d, %s: a value of %d bytes %s", i, attributeName(typ), len(v), bad)
		return false
	}
	return true
}

// attributeResult writes one entry of a C_GetAttributeValue reply.
func (w *writer) attributeResult(i int, res *AttributeResult) {
	if w.err != nil {
		return
	}
	class := attributeClass(res.Type, w.proto)
	if class == classTemplate {
		// p11-kit 0.24.1 fails the whole reply on such a type, even marked unavailable.
		w.fail(ErrNestedTemplate, "attribute %d is %s", i, attributeName(res.Type))
		return
	}
	switch res.Kind {
	case ResultValue:
		w.attributeValue(i, res.Type, res.Value)
	case ResultUnavailable:
		w.b.AddUint32(res.Type)
		w.b.AddUint8(0)
	case ResultSizeOnly:
		// The size goes in the length; the value is in its NULL form, which the client
		// decodes only to check that it is not longer than the length (§2.5, P5).
		size := res.Size
		bad := ""
		switch {
		case size > maxWireLen:
			bad = "is too large"
		case class == classBool && size != 1:
			bad = "must be 1 (CK_BBOOL)"
		case class == classUlong && size != 8:
			bad = "must be 8 (CK_ULONG)"
		case class == classMechanisms && size%8 != 0:
			bad = "must be a multiple of 8 (CK_MECHANISM_TYPE array)"
		case class == classDate && size != 0 && size != 8:
			bad = "must be 0 or 8 (CK_DATE)"
		}
		if bad != "" {
			w.fail(ErrInvalidAttribute, "attribute %d, %s: size %d %s", i, attributeName(res.Type), size, bad)
			return
		}
		w.b.AddUint32(res.Type)
		w.b.AddUint8(1)
		w.b.AddUint32(size)
		switch class {
		case classBool:
			w.b.AddUint8(0)
		case classUlong:
			w.b.AddUint64(0)
		case classMechanisms:
			w.b.AddUint32(0)
		default:
			w.b.AddUint32(nullLength)
		}
	default:
		w.fail(ErrInvalidArgument, "attribute %d, %s, has result kind %d", i, attributeName(res.Type), res.Kind)
	}
}

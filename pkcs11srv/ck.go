package pkcs11srv

import "fmt"

// Return values (PKCS #11 v2.40 §11.1; pkcs11t.h).
const (
	ckrOK                          = 0x000
	ckrCancel                      = 0x001
	ckrHostMemory                  = 0x002
	ckrSlotIDInvalid               = 0x003
	ckrGeneralError                = 0x005
	ckrFunctionFailed              = 0x006
	ckrArgumentsBad                = 0x007
	ckrNoEvent                     = 0x008
	ckrAttributeReadOnly           = 0x010
	ckrAttributeSensitive          = 0x011
	ckrAttributeTypeInvalid        = 0x012
	ckrAttributeValueInvalid       = 0x013
	ckrActionProhibited            = 0x01B
	ckrDataInvalid                 = 0x020
	ckrDataLenRange                = 0x021
	ckrDeviceError                 = 0x030
	ckrDeviceMemory                = 0x031
	ckrDeviceRemoved               = 0x032
	ckrEncryptedDataInvalid        = 0x040
	ckrEncryptedDataLenRange       = 0x041
	ckrFunctionCanceled            = 0x050
	ckrFunctionNotSupported        = 0x054
	ckrKeyHandleInvalid            = 0x060
	ckrKeyTypeInconsistent         = 0x063
	ckrKeyFunctionNotPermitted     = 0x068
	ckrMechanismInvalid            = 0x070
	ckrMechanismParamInvalid       = 0x071
	ckrObjectHandleInvalid         = 0x082
	ckrOperationActive             = 0x090
	ckrOperationNotInitialized     = 0x091
	ckrPINIncorrect                = 0x0A0
	ckrPINInvalid                  = 0x0A1
	ckrPINLenRange                 = 0x0A2
	ckrPINLocked                   = 0x0A4
	ckrSessionClosed               = 0x0B0
	ckrSessionCount                = 0x0B1
	ckrSessionHandleInvalid        = 0x0B3
	ckrSessionParallelNotSupported = 0x0B4
	ckrSessionReadOnly             = 0x0B5
	ckrSessionExists               = 0x0B6
	ckrSessionReadOnlyExists       = 0x0B7
	ckrSessionReadWriteSOExists    = 0x0B8
	ckrSignatureInvalid            = 0x0C0
	ckrSignatureLenRange           = 0x0C1
	ckrTemplateIncomplete          = 0x0D0
	ckrTemplateInconsistent        = 0x0D1
	ckrTokenNotPresent             = 0x0E0
	ckrTokenNotRecognized          = 0x0E1
	ckrUserAlreadyLoggedIn         = 0x100
	ckrUserNotLoggedIn             = 0x101
	ckrUserPINNotInitialized       = 0x102
	ckrUserTypeInvalid             = 0x103
	ckrUserAnotherAlreadyLoggedIn  = 0x104
	ckrRandomSeedNotSupported      = 0x120
	ckrBufferTooSmall              = 0x150
	ckrCryptokiNotInitialized      = 0x190
	ckrCryptokiAlreadyInitialized  = 0x191
)

// RV is a PKCS #11 return value carried as a Go error; CKR_OK is nil.
type RV uint64

func (r RV) Error() string {
	if n, ok := rvNames[r]; ok {
		return n
	}
	return fmt.Sprintf("CKR_0x%X", uint64(r))
}

var rvNames = map[RV]string{
	ckrCancel: "CKR_CANCEL", ckrHostMemory: "CKR_HOST_MEMORY", ckrSlotIDInvalid: "CKR_SLOT_ID_INVALID",
	ckrGeneralError: "CKR_GENERAL_ERROR", ckrFunctionFailed: "CKR_FUNCTION_FAILED", ckrArgumentsBad: "CKR_ARGUMENTS_BAD",
	ckrNoEvent: "CKR_NO_EVENT", ckrAttributeSensitive: "CKR_ATTRIBUTE_SENSITIVE", ckrAttributeTypeInvalid: "CKR_ATTRIBUTE_TYPE_INVALID",
	ckrAttributeValueInvalid: "CKR_ATTRIBUTE_VALUE_INVALID", ckrDataInvalid: "CKR_DATA_INVALID", ckrDataLenRange: "CKR_DATA_LEN_RANGE",
	ckrDeviceError: "CKR_DEVICE_ERROR", ckrDeviceMemory: "CKR_DEVICE_MEMORY", ckrDeviceRemoved: "CKR_DEVICE_REMOVED",
	ckrEncryptedDataInvalid: "CKR_ENCRYPTED_DATA_INVALID", ckrEncryptedDataLenRange: "CKR_ENCRYPTED_DATA_LEN_RANGE",
	ckrFunctionCanceled: "CKR_FUNCTION_CANCELED", ckrFunctionNotSupported: "CKR_FUNCTION_NOT_SUPPORTED",
	ckrKeyHandleInvalid: "CKR_KEY_HANDLE_INVALID", ckrKeyTypeInconsistent: "CKR_KEY_TYPE_INCONSISTENT",
	ckrKeyFunctionNotPermitted: "CKR_KEY_FUNCTION_NOT_PERMITTED", ckrMechanismInvalid: "CKR_MECHANISM_INVALID",
	ckrMechanismParamInvalid: "CKR_MECHANISM_PARAM_INVALID", ckrObjectHandleInvalid: "CKR_OBJECT_HANDLE_INVALID",
	ckrOperationActive: "CKR_OPERATION_ACTIVE", ckrOperationNotInitialized: "CKR_OPERATION_NOT_INITIALIZED",
	ckrPINIncorrect: "CKR_PIN_INCORRECT", ckrPINInvalid: "CKR_PIN_INVALID", ckrPINLenRange: "CKR_PIN_LEN_RANGE",
	ckrPINLocked: "CKR_PIN_LOCKED", ckrSessionClosed: "CKR_SESSION_CLOSED", ckrSessionCount: "CKR_SESSION_COUNT",
	ckrSessionHandleInvalid: "CKR_SESSION_HANDLE_INVALID", ckrSessionParallelNotSupported: "CKR_SESSION_PARALLEL_NOT_SUPPORTED",
	ckrSessionReadOnly: "CKR_SESSION_READ_ONLY", ckrSessionExists: "CKR_SESSION_EXISTS", ckrSessionReadOnlyExists: "CKR_SESSION_READ_ONLY_EXISTS",
	ckrSessionReadWriteSOExists: "CKR_SESSION_READ_WRITE_SO_EXISTS", ckrSignatureInvalid: "CKR_SIGNATURE_INVALID",
	ckrSignatureLenRange: "CKR_SIGNATURE_LEN_RANGE", ckrTemplateIncomplete: "CKR_TEMPLATE_INCOMPLETE",
	ckrTemplateInconsistent: "CKR_TEMPLATE_INCONSISTENT", ckrTokenNotPresent: "CKR_TOKEN_NOT_PRESENT",
	ckrTokenNotRecognized: "CKR_TOKEN_NOT_RECOGNIZED", ckrUserAlreadyLoggedIn: "CKR_USER_ALREADY_LOGGED_IN",
	ckrUserNotLoggedIn: "CKR_USER_NOT_LOGGED_IN", ckrUserPINNotInitialized: "CKR_USER_PIN_NOT_INITIALIZED",
	ckrUserTypeInvalid: "CKR_USER_TYPE_INVALID", ckrUserAnotherAlreadyLoggedIn: "CKR_USER_ANOTHER_ALREADY_LOGGED_IN",
	ckrRandomSeedNotSupported: "CKR_RANDOM_SEED_NOT_SUPPORTED", ckrBufferTooSmall: "CKR_BUFFER_TOO_SMALL",
	ckrCryptokiNotInitialized: "CKR_CRYPTOKI_NOT_INITIALIZED", ckrCryptokiAlreadyInitialized: "CKR_CRYPTOKI_ALREADY_INITIALIZED",
}

// rvOf returns the return value of err: CKR_OK for nil, the RV it carries, or
// CKR_FUNCTION_FAILED for any other error.
func rvOf(err error) uint64 {
	if err == nil {
		return ckrOK
	}
	if r, ok := err.(RV); ok {
		return uint64(r)
	}
	return ckrFunctionFailed
}

// User types.
const (
	ckuSO              = 0
	ckuUser            = 1
	ckuContextSpecific = 2
)

// Session states and flags.
const (
	cksROPublic = 0
	cksROUser   = 1
	cksRWPublic = 2
	cksRWUser   = 3
	cksRWSO     = 4

	ckfRWSession     = 0x02
	ckfSerialSession = 0x04
)

// Slot and token flags.
const (
	ckfTokenPresent     = 0x01
	ckfRemovableDevice  = 0x02
	ckfHWSlot           = 0x04
	ckfRNG              = 0x01
	ckfWriteProtected   = 0x02
	ckfLoginRequired    = 0x04
	ckfUserPINInit      = 0x08
	ckfProtectedAuth    = 0x100
	ckfTokenInitialized = 0x400
	ckfUserPINCountLow  = 0x10000
	ckfUserPINFinalTry  = 0x20000
	ckfUserPINLocked    = 0x40000
	ckfDontBlock        = 0x01

	ckUnavailable = ^uint64(0) // CK_UNAVAILABLE_INFORMATION
)

// Object classes, key types, certificate types.
const (
	ckoData        = 0
	ckoCertificate = 1
	ckoPublicKey   = 2
	ckoPrivateKey  = 3
	ckoSecretKey   = 4

	ckkRSA              = 0x00
	ckkEC               = 0x03
	ckkECEdwards        = 0x40
	ckkECMontgomery     = 0x41
	ckkGenericSecret    = 0x10
	ckkAES              = 0x1F
	ckcX509             = 0
	ckCertCategoryToken = 1 // CK_CERTIFICATE_CATEGORY_TOKEN_USER
)

// Attributes.
const (
	ckaClass               = 0x000
	ckaToken               = 0x001
	ckaPrivate             = 0x002
	ckaLabel               = 0x003
	ckaApplication         = 0x010
	ckaValue               = 0x011
	ckaObjectID            = 0x012
	ckaCertificateType     = 0x080
	ckaIssuer              = 0x081
	ckaSerialNumber        = 0x082
	ckaTrusted             = 0x086
	ckaCertificateCategory = 0x087
	ckaKeyType             = 0x100
	ckaSubject             = 0x101
	ckaID                  = 0x102
	ckaSensitive           = 0x103
	ckaEncrypt             = 0x104
	ckaDecrypt             = 0x105
	ckaWrap                = 0x106
	ckaUnwrap              = 0x107
	ckaSign                = 0x108
	ckaSignRecover         = 0x109
	ckaVerify              = 0x10A
	ckaVerifyRecover       = 0x10B
	ckaDerive              = 0x10C
	ckaStartDate           = 0x110
	ckaEndDate             = 0x111
	ckaModulus             = 0x120
	ckaModulusBits         = 0x121
	ckaPublicExponent      = 0x122
	ckaPrivateExponent     = 0x123
	ckaPrime1              = 0x124
	ckaPrime2              = 0x125
	ckaExponent1           = 0x126
	ckaExponent2           = 0x127
	ckaCoefficient         = 0x128
	ckaPublicKeyInfo       = 0x129
	ckaValueLen            = 0x161
	ckaExtractable         = 0x162
	ckaLocal               = 0x163
	ckaNeverExtractable    = 0x164
	ckaAlwaysSensitive     = 0x165
	ckaKeyGenMechanism     = 0x166
	ckaModifiable          = 0x170
	ckaCopyable            = 0x171
	ckaDestroyable         = 0x172
	ckaECParams            = 0x180
	ckaECPoint             = 0x181
	ckaAlwaysAuthenticate  = 0x202
	ckaWrapWithTrusted     = 0x210
	ckaAllowedMechanisms   = 0x40000600
)

// Mechanisms.
const (
	ckmRSAPKCSKeyPairGen   = 0x0000
	ckmRSAPKCS             = 0x0001
	ckmRSAX509             = 0x0003
	ckmSHA1RSAPKCS         = 0x0006
	ckmRSAPKCSOAEP         = 0x0009
	ckmRSAPKCSPSS          = 0x000D
	ckmSHA256RSAPKCS       = 0x0040
	ckmSHA384RSAPKCS       = 0x0041
	ckmSHA512RSAPKCS       = 0x0042
	ckmSHA256RSAPKCSPSS    = 0x0043
	ckmSHA384RSAPKCSPSS    = 0x0044
	ckmSHA512RSAPKCSPSS    = 0x0045
	ckmSHA1                = 0x0220
	ckmSHA256              = 0x0250
	ckmSHA384              = 0x0260
	ckmSHA512              = 0x0270
	ckmECKeyPairGen        = 0x1040
	ckmECDSA               = 0x1041
	ckmECDSASHA1           = 0x1042
	ckmECDSASHA256         = 0x1044
	ckmECDSASHA384         = 0x1045
	ckmECDSASHA512         = 0x1046
	ckmECDH1Derive         = 0x1050
	ckmECEdwardsKeyPairGen = 0x1055
	ckmEDDSA               = 0x1057

	ckgMGF1SHA1   = 1
	ckgMGF1SHA256 = 2
	ckgMGF1SHA384 = 3
	ckgMGF1SHA512 = 4

	ckdNull = 1

	ckzDataSpecified = 1 // CKZ_DATA_SPECIFIED, the OAEP label source
)

// Mechanism flags.
const (
	ckfHW              = 0x1
	ckfEncrypt         = 0x100
	ckfDecrypt         = 0x200
	ckfDigest          = 0x400
	ckfSign            = 0x800
	ckfVerify          = 0x2000
	ckfGenerateKeyPair = 0x10000
	ckfDerive          = 0x80000
	ckfECFP            = 0x100000
	ckfECNamedCurve    = 0x800000
	ckfECUncompress    = 0x1000000
)

package ike

import "fmt"

// ExchangeType is the exchange a message belongs to. RFC 7296 §3.1.
type ExchangeType uint8

// Exchange types.
const (
	ExchangeIKESAInit     ExchangeType = 34
	ExchangeIKEAuth       ExchangeType = 35
	ExchangeCreateChildSA ExchangeType = 36
	ExchangeInformational ExchangeType = 37
)

func (e ExchangeType) String() string {
	switch e {
	case ExchangeIKESAInit:
		return "IKE_SA_INIT"
	case ExchangeIKEAuth:
		return "IKE_AUTH"
	case ExchangeCreateChildSA:
		return "CREATE_CHILD_SA"
	case ExchangeInformational:
		return "INFORMATIONAL"
	}
	return fmt.Sprintf("EXCHANGE(%d)", uint8(e))
}

// Header flags. RFC 7296 §3.1.
const (
	flagInitiator = 0x08
	flagVersion   = 0x10
	flagResponse  = 0x20
)

// ikeVersion is major version 2, minor 0.
const ikeVersion = 0x20

// PayloadType identifies a payload in the chain of Next Payload fields. RFC 7296 §3.2,
// RFC 7383 §2.5 (SKF).
type PayloadType uint8

// Payload types.
const (
	PayloadNone    PayloadType = 0
	PayloadSA      PayloadType = 33
	PayloadKE      PayloadType = 34
	PayloadIDi     PayloadType = 35
	PayloadIDr     PayloadType = 36
	PayloadCERT    PayloadType = 37
	PayloadCERTREQ PayloadType = 38
	PayloadAUTH    PayloadType = 39
	PayloadNonce   PayloadType = 40
	PayloadNotify  PayloadType = 41
	PayloadDelete  PayloadType = 42
	PayloadVendor  PayloadType = 43
	PayloadTSi     PayloadType = 44
	PayloadTSr     PayloadType = 45
	PayloadSK      PayloadType = 46
	PayloadCP      PayloadType = 47
	PayloadEAP     PayloadType = 48
	PayloadSKF     PayloadType = 53
)

var payloadNames = map[PayloadType]string{
	PayloadNone: "NONE", PayloadSA: "SA", PayloadKE: "KE", PayloadIDi: "IDi", PayloadIDr: "IDr",
	PayloadCERT: "CERT", PayloadCERTREQ: "CERTREQ", PayloadAUTH: "AUTH", PayloadNonce: "No",
	PayloadNotify: "N", PayloadDelete: "D", PayloadVendor: "V", PayloadTSi: "TSi", PayloadTSr: "TSr",
	PayloadSK: "SK", PayloadCP: "CP", PayloadEAP: "EAP", PayloadSKF: "SKF",
}

func (p PayloadType) String() string {
	if n, ok := payloadNames[p]; ok {
		return n
	}
	return fmt.Sprintf("PAYLOAD(%d)", uint8(p))
}

// ProtocolID names the protocol of a proposal, notification or deletion. RFC 7296 §3.3.1.
type ProtocolID uint8

// Protocol IDs.
const (
	ProtocolNone ProtocolID = 0
	ProtocolIKE  ProtocolID = 1
	ProtocolAH   ProtocolID = 2
	ProtocolESP  ProtocolID = 3
)

// TransformType is the kind of a transform. RFC 7296 §3.3.2.
type TransformType uint8

// Transform types.
const (
	TransformENCR  TransformType = 1
	TransformPRF   TransformType = 2
	TransformINTEG TransformType = 3
	TransformDH    TransformType = 4
	TransformESN   TransformType = 5
)

// Encryption algorithm transform IDs (IANA "Transform Type 1"); RFC 5282 for GCM, RFC 7634
// for ChaCha20-Poly1305.
const (
	EncrAESCBC           uint16 = 12
	EncrAESGCM16         uint16 = 20
	EncrChaCha20Poly1305 uint16 = 28
)

// Pseudorandom function transform IDs. RFC 4868.
const (
	PRFHMACSHA256 uint16 = 5
	PRFHMACSHA384 uint16 = 6
	PRFHMACSHA512 uint16 = 7
)

// Integrity algorithm transform IDs. RFC 4868.
const (
	IntegNone           uint16 = 0
	IntegHMACSHA256_128 uint16 = 12
	IntegHMACSHA384_192 uint16 = 13
	IntegHMACSHA512_256 uint16 = 14
)

// Diffie-Hellman group transform IDs: RFC 3526 (14), RFC 5903 (19–21), RFC 8031 (31).
const (
	DHModp2048   uint16 = 14
	DHECP256     uint16 = 19
	DHECP384     uint16 = 20
	DHECP521     uint16 = 21
	DHCurve25519 uint16 = 31
)

// Extended sequence numbers transform IDs.
const (
	ESNNo  uint16 = 0
	ESNYes uint16 = 1
)

// attrKeyLength is the Key Length transform attribute (TV format). RFC 7296 §3.3.5.
const attrKeyLength = 14

// NotifyType is a notification's type; below 16384 an error. RFC 7296 §3.10.1.
type NotifyType uint16

// Error notifications.
const (
	NotifyUnsupportedCriticalPayload NotifyType = 1
	NotifyInvalidIKESPI              NotifyType = 4
	NotifyInvalidMajorVersion        NotifyType = 5
	NotifyInvalidSyntax              NotifyType = 7
	NotifyInvalidMessageID           NotifyType = 9
	NotifyInvalidSPI                 NotifyType = 11
	NotifyNoProposalChosen           NotifyType = 14
	NotifyInvalidKEPayload           NotifyType = 17
	NotifyAuthenticationFailed       NotifyType = 24
	NotifySinglePairRequired         NotifyType = 34
	NotifyNoAdditionalSAs            NotifyType = 35
	NotifyInternalAddressFailure     NotifyType = 36
	NotifyFailedCPRequired           NotifyType = 37
	NotifyTSUnacceptable             NotifyType = 38
	NotifyInvalidSelectors           NotifyType = 39
	NotifyTemporaryFailure           NotifyType = 43
	NotifyChildSANotFound            NotifyType = 44
)

// Status notifications; RFC 7296 §3.10.1, RFC 4555 (MOBIKE), RFC 4739 (multiple auth),
// RFC 5685 (redirect), RFC 5998 (EAP-only), RFC 6023 (childless), RFC 7383 (fragmentation),
// RFC 7427 (hash algorithms).
const (
	NotifyInitialContact              NotifyType = 16384
	NotifySetWindowSize               NotifyType = 16385
	NotifyAdditionalTSPossible        NotifyType = 16386
	NotifyIPCompSupported             NotifyType = 16387
	NotifyNATDetectionSourceIP        NotifyType = 16388
	NotifyNATDetectionDestinationIP   NotifyType = 16389
	NotifyCookie                      NotifyType = 16390
	NotifyUseTransportMode            NotifyType = 16391
	NotifyRekeySA                     NotifyType = 16393
	NotifyESPTFCPaddingNotSupported   NotifyType = 16394
	NotifyNonFirstFragmentsAlso       NotifyType = 16395
	NotifyMOBIKESupported             NotifyType = 16396
	NotifyMultipleAuthSupported       NotifyType = 16404
	NotifyAnotherAuthFollows          NotifyType = 16405
	NotifyRedirectSupported           NotifyType = 16406
	NotifyEAPOnlyAuthentication       NotifyType = 16417
	NotifyChildlessIKEv2Supported     NotifyType = 16418
	NotifyIKEv2FragmentationSupported NotifyType = 16430
	NotifySignatureHashAlgorithms     NotifyType = 16431
)

var notifyNames = map[NotifyType]string{
	NotifyUnsupportedCriticalPayload: "UNSUPPORTED_CRITICAL_PAYLOAD", NotifyInvalidIKESPI: "INVALID_IKE_SPI",
	NotifyInvalidMajorVersion: "INVALID_MAJOR_VERSION", NotifyInvalidSyntax: "INVALID_SYNTAX",
	NotifyInvalidMessageID: "INVALID_MESSAGE_ID", NotifyInvalidSPI: "INVALID_SPI",
	NotifyNoProposalChosen: "NO_PROPOSAL_CHOSEN", NotifyInvalidKEPayload: "INVALID_KE_PAYLOAD",
	NotifyAuthenticationFailed: "AUTHENTICATION_FAILED", NotifySinglePairRequired: "SINGLE_PAIR_REQUIRED",
	NotifyNoAdditionalSAs: "NO_ADDITIONAL_SAS", NotifyInternalAddressFailure: "INTERNAL_ADDRESS_FAILURE",
	NotifyFailedCPRequired: "FAILED_CP_REQUIRED", NotifyTSUnacceptable: "TS_UNACCEPTABLE",
	NotifyInvalidSelectors: "INVALID_SELECTORS", NotifyTemporaryFailure: "TEMPORARY_FAILURE",
	NotifyChildSANotFound: "CHILD_SA_NOT_FOUND", NotifyInitialContact: "INITIAL_CONTACT",
	NotifySetWindowSize: "SET_WINDOW_SIZE", NotifyAdditionalTSPossible: "ADDITIONAL_TS_POSSIBLE",
	NotifyIPCompSupported: "IPCOMP_SUPPORTED", NotifyNATDetectionSourceIP: "NAT_DETECTION_SOURCE_IP",
	NotifyNATDetectionDestinationIP: "NAT_DETECTION_DESTINATION_IP", NotifyCookie: "COOKIE",
	NotifyUseTransportMode: "USE_TRANSPORT_MODE", NotifyRekeySA: "REKEY_SA",
	NotifyESPTFCPaddingNotSupported: "ESP_TFC_PADDING_NOT_SUPPORTED", NotifyNonFirstFragmentsAlso: "NON_FIRST_FRAGMENTS_ALSO",
	NotifyMOBIKESupported: "MOBIKE_SUPPORTED", NotifyMultipleAuthSupported: "MULTIPLE_AUTH_SUPPORTED",
	NotifyAnotherAuthFollows: "ANOTHER_AUTH_FOLLOWS", NotifyRedirectSupported: "REDIRECT_SUPPORTED",
	NotifyEAPOnlyAuthentication: "EAP_ONLY_AUTHENTICATION", NotifyChildlessIKEv2Supported: "CHILDLESS_IKEV2_SUPPORTED",
	NotifyIKEv2FragmentationSupported: "IKEV2_FRAGMENTATION_SUPPORTED", NotifySignatureHashAlgorithms: "SIGNATURE_HASH_ALGORITHMS",
}

func (n NotifyType) String() string {
	if s, ok := notifyNames[n]; ok {
		return s
	}
	return fmt.Sprintf("NOTIFY(%d)", uint16(n))
}

// IsError reports whether n is an error notification.
func (n NotifyType) IsError() bool { return n < 16384 }

// IDType is the type of an identification payload. RFC 7296 §3.5.
type IDType uint8

// Identification types.
const (
	IDIPv4Addr IDType = 1
	IDFQDN     IDType = 2
	IDRFC822   IDType = 3
	IDIPv6Addr IDType = 5
	IDDERDN    IDType = 9
	IDKeyID    IDType = 11
)

// CertEncoding is the encoding of a CERT or CERTREQ payload. RFC 7296 §3.6.
type CertEncoding uint8

// certX509Signature is "X.509 Certificate - Signature".
const certX509Signature CertEncoding = 4

// AuthMethod is how an AUTH payload was made. RFC 7296 §3.8, RFC 4754 §4, RFC 7427 §3.
type AuthMethod uint8

// Authentication methods.
const (
	AuthRSA              AuthMethod = 1
	AuthPSK              AuthMethod = 2
	AuthECDSA256         AuthMethod = 9
	AuthECDSA384         AuthMethod = 10
	AuthECDSA521         AuthMethod = 11
	AuthDigitalSignature AuthMethod = 14
)

func (m AuthMethod) String() string {
	switch m {
	case AuthRSA:
		return "RSA"
	case AuthPSK:
		return "PSK"
	case AuthECDSA256:
		return "ECDSA-256"
	case AuthECDSA384:
		return "ECDSA-384"
	case AuthECDSA521:
		return "ECDSA-521"
	case AuthDigitalSignature:
		return "DIGITAL_SIGNATURE"
	}
	return fmt.Sprintf("AUTH(%d)", uint8(m))
}

// Hash algorithm identifiers of SIGNATURE_HASH_ALGORITHMS. RFC 7427 §7.
const (
	hashSHA256 uint16 = 2
	hashSHA384 uint16 = 3
	hashSHA512 uint16 = 4
)

// Traffic selector type and configuration payload constants. RFC 7296 §3.13.1, §3.15.
const (
	tsIPv4AddrRange = 7

	cfgRequest = 1
	cfgReply   = 2

	attrInternalIP4Address = 1
	attrInternalIP4Netmask = 2
	attrInternalIP4DNS     = 3
	attrInternalIP4Subnet  = 13
)

// EAP codes and types. RFC 3748 §4, §5; type 26 is MS-CHAPv2 (draft-kamath-pppext-eap-mschapv2).
const (
	eapRequest  = 1
	eapResponse = 2
	eapSuccess  = 3
	eapFailure  = 4

	eapTypeIdentity = 1
	eapTypeNak      = 3
	eapTypeGTC      = 6
	eapTypeMSCHAPv2 = 26
)

package p11rpc

import "strconv"

// Call is an RPC call id: the first u32 of every message body (p11kit-rpc.md §2.2).
type Call uint32

// Call ids 0–65 exist since p11-kit 0.23, 66–88 since 0.25.0, 89 since 0.25.6
// (p11-glue/p11-kit p11-kit/rpc-message.h, tags 0.24.1, 0.25.0, 0.25.6, 0.26.4).
const (
	CallError               Call = 0
	CallInitialize          Call = 1
	CallFinalize            Call = 2
	CallGetInfo             Call = 3
	CallGetSlotList         Call = 4
	CallGetSlotInfo         Call = 5
	CallGetTokenInfo        Call = 6
	CallGetMechanismList    Call = 7
	CallGetMechanismInfo    Call = 8
	CallInitToken           Call = 9
	CallOpenSession         Call = 10
	CallCloseSession        Call = 11
	CallCloseAllSessions    Call = 12
	CallGetSessionInfo      Call = 13
	CallInitPIN             Call = 14
	CallSetPIN              Call = 15
	CallGetOperationState   Call = 16
	CallSetOperationState   Call = 17
	CallLogin               Call = 18
	CallLogout              Call = 19
	CallCreateObject        Call = 20
	CallCopyObject          Call = 21
	CallDestroyObject       Call = 22
	CallGetObjectSize       Call = 23
	CallGetAttributeValue   Call = 24
	CallSetAttributeValue   Call = 25
	CallFindObjectsInit     Call = 26
	CallFindObjects         Call = 27
	CallFindObjectsFinal    Call = 28
	CallEncryptInit         Call = 29
	CallEncrypt             Call = 30
	CallEncryptUpdate       Call = 31
	CallEncryptFinal        Call = 32
	CallDecryptInit         Call = 33
	CallDecrypt             Call = 34
	CallDecryptUpdate       Call = 35
	CallDecryptFinal        Call = 36
	CallDigestInit          Call = 37
	CallDigest              Call = 38
	CallDigestUpdate        Call = 39
	CallDigestKey           Call = 40
	CallDigestFinal         Call = 41
	CallSignInit            Call = 42
	CallSign                Call = 43
	CallSignUpdate          Call = 44
	CallSignFinal           Call = 45
	CallSignRecoverInit     Call = 46
	CallSignRecover         Call = 47
	CallVerifyInit          Call = 48
	CallVerify              Call = 49
	CallVerifyUpdate        Call = 50
	CallVerifyFinal         Call = 51
	CallVerifyRecoverInit   Call = 52
	CallVerifyRecover       Call = 53
	CallDigestEncryptUpdate Call = 54
	CallDecryptDigestUpdate Call = 55
	CallSignEncryptUpdate   Call = 56
	CallDecryptVerifyUpdate Call = 57
	CallGenerateKey         Call = 58
	CallGenerateKeyPair     Call = 59
	CallWrapKey             Call = 60
	CallUnwrapKey           Call = 61
	CallDeriveKey           Call = 62
	CallSeedRandom          Call = 63
	CallGenerateRandom      Call = 64
	CallWaitForSlotEvent    Call = 65
	CallLoginUser           Call = 66
	CallSessionCancel       Call = 67
	CallMessageEncryptInit  Call = 68
	CallEncryptMessage      Call = 69
	CallEncryptMessageBegin Call = 70
	CallEncryptMessageNext  Call = 71
	CallMessageEncryptFinal Call = 72
	CallMessageDecryptInit  Call = 73
	CallDecryptMessage      Call = 74
	CallDecryptMessageBegin Call = 75
	CallDecryptMessageNext  Call = 76
	CallMessageDecryptFinal Call = 77
	CallMessageSignInit     Call = 78
	CallSignMessage         Call = 79
	CallSignMessageBegin    Call = 80
	CallSignMessageNext     Call = 81
	CallMessageSignFinal    Call = 82
	CallMessageVerifyInit   Call = 83
	CallVerifyMessage       Call = 84
	CallVerifyMessageBegin  Call = 85
	CallVerifyMessageNext   Call = 86
	CallMessageVerifyFinal  Call = 87
	CallInitToken2          Call = 88
	CallDeriveKey2          Call = 89
)

// NumCalls is one more than the highest call id any p11-kit release defines.
const NumCalls = 90

// callInfo is one row of the call table. A request signature of "-" marks ERROR,
// which is never a request.
type callInfo struct {
	name     string
	request  string
	response string
}

// calls is indexed by Call. Letters: y byte, u ulong, v version, s space-padded string,
// z string, ay byte array, au ulong array, aA attribute array, fy/fu/fA output buffers,
// M mechanism, P mechanism-parameter update (§2.1).
var calls = [NumCalls]callInfo{
	{"ERROR", "-", "u"},
	{"C_Initialize", "ayyay", ""},
	{"C_Finalize", "", ""},
	{"C_GetInfo", "", "vsusv"},
	{"C_GetSlotList", "yfu", "au"},
	{"C_GetSlotInfo", "u", "ssuvv"},
	{"C_GetTokenInfo", "u", "ssssuuuuuuuuuuuvvs"},
	{"C_GetMechanismList", "ufu", "au"},
	{"C_GetMechanismInfo", "uu", "uuu"},
	{"C_InitToken", "uayz", ""},
	{"C_OpenSession", "uu", "u"},
	{"C_CloseSession", "u", ""},
	{"C_CloseAllSessions", "u", ""},
	{"C_GetSessionInfo", "u", "uuuu"},
	{"C_InitPIN", "uay", ""},
	{"C_SetPIN", "uayay", ""},
	{"C_GetOperationState", "ufy", "ay"},
	{"C_SetOperationState", "uayuu", ""},
	{"C_Login", "uuay", ""},
	{"C_Logout", "u", ""},
	{"C_CreateObject", "uaA", "u"},
	{"C_CopyObject", "uuaA", "u"},
	{"C_DestroyObject", "uu", ""},
	{"C_GetObjectSize", "uu", "u"},
	{"C_GetAttributeValue", "uufA", "aAu"},
	{"C_SetAttributeValue", "uuaA", ""},
	{"C_FindObjectsInit", "uaA", ""},
	{"C_FindObjects", "ufu", "au"},
	{"C_FindObjectsFinal", "u", ""},
	{"C_EncryptInit", "uMu", ""},
	{"C_Encrypt", "uayfy", "ay"},
	{"C_EncryptUpdate", "uayfy", "ay"},
	{"C_EncryptFinal", "ufy", "ay"},
	{"C_DecryptInit", "uMu", ""},
	{"C_Decrypt", "uayfy", "ay"},
	{"C_DecryptUpdate", "uayfy", "ay"},
	{"C_DecryptFinal", "ufy", "ay"},
	{"C_DigestInit", "uM", ""},
	{"C_Digest", "uayfy", "ay"},
	{"C_DigestUpdate", "uay", ""},
	{"C_DigestKey", "uu", ""},
	{"C_DigestFinal", "ufy", "ay"},
	{"C_SignInit", "uMu", ""},
	{"C_Sign", "uayfy", "ay"},
	{"C_SignUpdate", "uay", ""},
	{"C_SignFinal", "ufy", "ay"},
	{"C_SignRecoverInit", "uMu", ""},
	{"C_SignRecover", "uayfy", "ay"},
	{"C_VerifyInit", "uMu", ""},
	{"C_Verify", "uayay", ""},
	{"C_VerifyUpdate", "uay", ""},
	{"C_VerifyFinal", "uay", ""},
	{"C_VerifyRecoverInit", "uMu", ""},
	{"C_VerifyRecover", "uayfy", "ay"},
	{"C_DigestEncryptUpdate", "uayfy", "ay"},
	{"C_DecryptDigestUpdate", "uayfy", "ay"},
	{"C_SignEncryptUpdate", "uayfy", "ay"},
	{"C_DecryptVerifyUpdate", "uayfy", "ay"},
	{"C_GenerateKey", "uMaA", "u"},
	{"C_GenerateKeyPair", "uMaAaA", "uu"},
	{"C_WrapKey", "uMuufy", "ay"},
	{"C_UnwrapKey", "uMuayaA", "u"},
	{"C_DeriveKey", "uMuaA", "u"},
	{"C_SeedRandom", "uay", ""},
	{"C_GenerateRandom", "ufy", "ay"},
	{"C_WaitForSlotEvent", "u", "u"},
	{"C_LoginUser", "uuayay", ""},
	{"C_SessionCancel", "uu", ""},
	{"C_MessageEncryptInit", "uMu", ""},
	{"C_EncryptMessage", "uayayayfy", "ay"},
	{"C_EncryptMessageBegin", "uayay", ""},
	{"C_EncryptMessageNext", "uayayfyu", "ay"},
	{"C_MessageEncryptFinal", "u", ""},
	{"C_MessageDecryptInit", "uMu", ""},
	{"C_DecryptMessage", "uayayayfy", "ay"},
	{"C_DecryptMessageBegin", "uayay", ""},
	{"C_DecryptMessageNext", "uayayfyu", "ay"},
	{"C_MessageDecryptFinal", "u", ""},
	{"C_MessageSignInit", "uMu", ""},
	{"C_SignMessage", "uayayfy", "ay"},
	{"C_SignMessageBegin", "uay", ""},
	{"C_SignMessageNext", "uayayyfy", "ay"},
	{"C_MessageSignFinal", "u", ""},
	{"C_MessageVerifyInit", "uMu", ""},
	{"C_VerifyMessage", "uayayay", ""},
	{"C_VerifyMessageBegin", "uay", ""},
	{"C_VerifyMessageNext", "uayayay", ""},
	{"C_MessageVerifyFinal", "u", ""},
	{"C_InitToken2", "uays", ""},
	{"C_DeriveKey2", "uMuaA", "uPu"},
}

// String returns the PKCS#11 function name ("C_Sign"), "ERROR" for call 0, or
// "call(N)" for an id no p11-kit release defines.
func (c Call) String() string {
	if c < NumCalls {
		return calls[c].name
	}
	return "call(" + strconv.FormatUint(uint64(c), 10) + ")"
}

// Known reports whether c is a call id of the protocol (0–89).
func (c Call) Known() bool { return c < NumCalls }

// RequestSignature returns the signature string a request for c carries. ok is false
// for ERROR (never a request) and for unknown ids.
func (c Call) RequestSignature() (sig string, ok bool) {
	if c == CallError || c >= NumCalls {
		return "", false
	}
	return calls[c].request, true
}

// ResponseSignature returns the signature string a reply to c carries; ERROR's is "u".
// ok is false for unknown ids.
func (c Call) ResponseSignature() (sig string, ok bool) {
	if c >= NumCalls {
		return "", false
	}
	return calls[c].response, true
}

// LookupCall returns the call whose PKCS#11 name (as String returns it) is name.
func LookupCall(name string) (Call, bool) {
	for i := range calls {
		if calls[i].name == name {
			return Call(i), true
		}
	}
	return 0, false
}

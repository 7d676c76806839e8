// Package mgmt is the YubiKey management application, reduced to what hosts read of it: the
// firmware version, serial number, form factor and enabled applications (ykman's device info).
package mgmt

import (
	"context"
	"fmt"

	"tokenlab/apdu"
	"tokenlab/apdu/tlv"
)

// AID of the Yubico management application.
var AID = []byte{0xA0, 0x00, 0x00, 0x05, 0x27, 0x47, 0x11, 0x17}

// Device info tags (yubikit management.py).
const (
	tagUSBSupported tlv.Tag = 0x01
	tagSerial       tlv.Tag = 0x02
	tagUSBEnabled   tlv.Tag = 0x03
	tagFormFactor   tlv.Tag = 0x04
	tagVersion      tlv.Tag = 0x05
	tagDeviceFlags  tlv.Tag = 0x08
	tagConfigLock   tlv.Tag = 0x0A
)

const (
	insReadConfig = 0x1D
	// capabilityPIV is the only application this card has.
	capabilityPIV = 0x0010
)

// Applet answers SELECT with the firmware version as text and READ CONFIG with the device info.
type Applet struct {
	Version    [3]byte
	Serial     uint32
	FormFactor byte // 0x01 USB-A keychain (yubikit FORM_FACTOR)
}

// AID implements emulator.Applet.
func (a *Applet) AID() []byte { return AID }

// Select implements emulator.Applet: a YubiKey answers with its version as text.
func (a *Applet) Select(_ bool, rsp []byte) ([]byte, apdu.StatusWord) {
	return fmt.Appendf(rsp, "%d.%d.%d", a.Version[0], a.Version[1], a.Version[2]), apdu.SWSuccess
}

// Deselect implements emulator.Applet; the application has no security status.
func (a *Applet) Deselect() {}

// Bypassed implements emulator.Applet.
func (a *Applet) Bypassed() {}

// Process implements emulator.Applet.
func (a *Applet) Process(_ context.Context, cmd *apdu.Command, rsp []byte) ([]byte, apdu.StatusWord) {
	if cmd.INS != insReadConfig {
		return rsp, apdu.SWInstructionNotSupported
	}
	if cmd.P1 != 0 || cmd.P2 != 0 {
		return rsp, apdu.SWIncorrectP1P2
	}
	s := a.Serial
	var info []byte
	info = tlv.Append(info, tagUSBSupported, []byte{0, capabilityPIV})
	info = tlv.Append(info, tagSerial, []byte{byte(s >> 24), byte(s >> 16), byte(s >> 8), byte(s)})
	info = tlv.Append(info, tagUSBEnabled, []byte{0, capabilityPIV})
	info = tlv.Append(info, tagFormFactor, []byte{a.FormFactor})
	info = tlv.Append(info, tagVersion, a.Version[:])
	info = tlv.Append(info, tagDeviceFlags, []byte{0})
	info = tlv.Append(info, tagConfigLock, []byte{0})
	// READ CONFIG prefixes the TLVs with their total length in one byte.
	rsp = append(rsp, byte(len(info)))
	return append(rsp, info...), apdu.SWSuccess
}

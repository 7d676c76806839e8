package lab

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"tokenlab/middleware"
	"tokenlab/pkcs11srv/p11rpc"
)

// PKCS #11 values the lab's application uses.
const (
	ckuUser            = 1
	ckuContextSpecific = 2
	ckfRWSession       = 2
	ckfSerialSession   = 4
	ckaClass           = 0x000
	ckaID              = 0x102
	ckaAlwaysAuth      = 0x202
	ckoPrivateKey      = 3
	ckmECDSA           = 0x1041
	ckfDontBlock       = 1
	ckrNoEvent         = 0x008
)

// pkcs11Conn is a PKCS#11 application's run, from C_Initialize to C_Finalize, over the p11-kit
// RPC protocol to the lab's PKCS#11 server, as p11-kit-client.so speaks it. It logs in through
// the protected authentication path (the middleware asks the person), so the policy decides
// every prompt.
type pkcs11Conn struct {
	c       *p11rpc.Client
	conn    net.Conn
	session uint64
	done    chan error
}

// connectPKCS11 starts the application, logs it in and signs once with the key in slot.
func connectPKCS11(ctx context.Context, e *env, app *application, slot byte) (connection, error) {
	client, server := net.Pipe()
	pc := &pkcs11Conn{conn: client, done: make(chan error, 1)}
	go func() { pc.done <- e.p11.ServeConn(context.WithoutCancel(ctx), server, app.name) }()
	c, err := p11rpc.NewClient(client, p11rpc.Protocol1)
	if err != nil {
		pc.hangUp()
		return nil, fmt.Errorf("pkcs11: %w", err)
	}
	pc.c = c
	if err := pc.open(); err != nil {
		pc.hangUp()
		return nil, err
	}
	if err := pc.sign(ctx, slot); err != nil {
		pc.close(ctx)
		return nil, err
	}
	return pc, nil
}

func (p *pkcs11Conn) open() error {
	r, err := p.c.Call(p11rpc.CallOpenSession, func(w *p11rpc.RequestWriter) {
		w.Ulong(0)
		w.Ulong(ckfSerialSession | ckfRWSession)
	})
	if err != nil {
		return fmt.Errorf("pkcs11: C_OpenSession: %w", err)
	}
	if p.session, err = r.Ulong(); err != nil {
		return err
	}
	if _, err := p.c.Call(p11rpc.CallLogin, func(w *p11rpc.RequestWriter) {
		w.Ulong(p.session)
		w.Ulong(ckuUser)
		w.NullByteArray() // the protected authentication path: the middleware asks
	}); err != nil {
		return fmt.Errorf("pkcs11: C_Login: %w", err)
	}
	return nil
}

// sign finds the private key of slot, signs a digest with CKM_ECDSA, and gives a context
// login first when the key says CKA_ALWAYS_AUTHENTICATE, as NSS and OpenSC's tools do.
func (p *pkcs11Conn) sign(ctx context.Context, slot byte) error {
	key, err := p.findKey(slot)
	if err != nil {
		return err
	}
	always, err := p.alwaysAuthenticate(key)
	if err != nil {
		return err
	}
	if _, err := p.c.Call(p11rpc.CallSignInit, func(w *p11rpc.RequestWriter) {
		w.Ulong(p.session)
		w.Mechanism(p11rpc.Mechanism{Type: ckmECDSA})
		w.Ulong(key)
	}); err != nil {
		return fmt.Errorf("pkcs11: C_SignInit: %w", err)
	}
	if always {
		if _, err := p.c.Call(p11rpc.CallLogin, func(w *p11rpc.RequestWriter) {
			w.Ulong(p.session)
			w.Ulong(ckuContextSpecific)
			w.NullByteArray()
		}); err != nil {
			return fmt.Errorf("pkcs11: C_Login(CKU_CONTEXT_SPECIFIC): %w", err)
		}
	}
	digest := sha256.Sum256([]byte("tokenlab lab"))
	r, err := p.c.Call(p11rpc.CallSign, func(w *p11rpc.RequestWriter) {
		w.Ulong(p.session)
		w.ByteArray(digest[:])
		w.BufferSize(132)
	})
	if err != nil {
		return fmt.Errorf("pkcs11: C_Sign: %w", err)
	}
	sig, _, err := r.ByteArray()
	if err != nil {
		return err
	}
	if len(sig) != 64 {
		return fmt.Errorf("pkcs11: C_Sign gave %d bytes, want 64", len(sig))
	}
	return nil
}

func (p *pkcs11Conn) findKey(slot byte) (uint64, error) {
	id := byte(slices.Index(middleware.KeySlots(), slot) + 1)
	if _, err := p.c.Call(p11rpc.CallFindObjectsInit, func(w *p11rpc.RequestWriter) {
		w.Ulong(p.session)
		w.Attributes([]p11rpc.Attribute{p11rpc.UlongAttribute(ckaClass, ckoPrivateKey), {Type: ckaID, Value: []byte{id}}})
	}); err != nil {
		return 0, fmt.Errorf("pkcs11: C_FindObjectsInit: %w", err)
	}
	r, err := p.c.Call(p11rpc.CallFindObjects, func(w *p11rpc.RequestWriter) {
		w.Ulong(p.session)
		w.UlongBufferSize(4)
	})
	if err != nil {
		return 0, fmt.Errorf("pkcs11: C_FindObjects: %w", err)
	}
	objs, _, err := r.UlongArray()
	if err != nil {
		return 0, err
	}
	if _, err := p.c.Call(p11rpc.CallFindObjectsFinal, func(w *p11rpc.RequestWriter) { w.Ulong(p.session) }); err != nil {
		return 0, fmt.Errorf("pkcs11: C_FindObjectsFinal: %w", err)
	}
	if len(objs) != 1 {
		return 0, fmt.Errorf("pkcs11: %d private keys with the CKA_ID of %02x, want 1", len(objs), slot)
	}
	return objs[0], nil
}

func (p *pkcs11Conn) alwaysAuthenticate(key uint64) (bool, error) {
	reqs := []p11rpc.AttributeRequest{{Type: ckaAlwaysAuth, Capacity: 1}}
	r, err := p.c.Call(p11rpc.CallGetAttributeValue, func(w *p11rpc.RequestWriter) {
		w.Ulong(p.session)
		w.Ulong(key)
		w.AttributeRequests(reqs)
	})
	if err != nil {
		return false, fmt.Errorf("pkcs11: C_GetAttributeValue: %w", err)
	}
	res, err := r.Attributes(reqs)
	if err != nil {
		return false, err
	}
	return len(res) == 1 && res[0].Kind == p11rpc.ResultValue && len(res[0].Value) == 1 && res[0].Value[0] != 0, nil
}

// slotEvent polls C_WaitForSlotEvent without blocking until the slot's event is reported.
func (p *pkcs11Conn) slotEvent(ctx context.Context) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := p.c.Call(p11rpc.CallWaitForSlotEvent, func(w *p11rpc.RequestWriter) { w.Ulong(ckfDontBlock) })
		var er *p11rpc.ErrorReply
		switch {
		case err == nil:
			return nil
		case !errors.As(err, &er) || er.RV != ckrNoEvent:
			return fmt.Errorf("pkcs11: C_WaitForSlotEvent: %w", err)
		case time.Now().After(deadline):
			return errors.New("pkcs11: no slot event 5 s after the card moved")
		}
		select {
		case <-time.After(time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// close logs out and finalizes, as an application does when it is done, and hangs up.
func (p *pkcs11Conn) close(ctx context.Context) error {
	var errs []error
	if _, err := p.c.Call(p11rpc.CallLogout, func(w *p11rpc.RequestWriter) { w.Ulong(p.session) }); err != nil {
		var er *p11rpc.ErrorReply
		if !errors.As(err, &er) { // CKR_USER_NOT_LOGGED_IN after a removal is fine
			errs = append(errs, fmt.Errorf("pkcs11: C_Logout: %w", err))
		}
	}
	if _, err := p.c.Call(p11rpc.CallFinalize, nil); err != nil {
		errs = append(errs, fmt.Errorf("pkcs11: C_Finalize: %w", err))
	}
	errs = append(errs, p.hangUp())
	return errors.Join(errs...)
}

func (p *pkcs11Conn) hangUp() error {
	p.conn.Close()
	return <-p.done
}

package pkcs11srv

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"net"
	"testing"
	"time"

	"tokenlab/pkcs11srv/p11rpc"
)

// dialApp serves one application over a pipe and returns its client, with C_Initialize done.
func dialApp(t *testing.T, srv *Server, proto p11rpc.Protocol) *p11rpc.Client {
	t.Helper()
	client, server := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(ctx, server, "rpc-test") }()
	t.Cleanup(func() {
		defer cancel()
		client.Close() // the application hangs up: ServeConn returns nil
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ServeConn: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("ServeConn did not return after the client hung up")
		}
	})
	client.SetDeadline(time.Now().Add(10 * time.Second)) // a hung server fails the test
	c, err := p11rpc.NewClient(client, proto)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ulongResult(r *p11rpc.ResponseReader, err error) (uint64, error) {
	if err != nil {
		return 0, err
	}
	return r.Ulong()
}

// sharedSecret is Z as the peer computes it with the public key of the card's slot.
func (f *fixture) sharedSecret(t *testing.T, slot byte, peer *ecdh.PrivateKey) []byte {
	t.Helper()
	a := f.app("peer")
	if err := a.loadObjects(context.Background()); err != nil {
		t.Fatal(err)
	}
	pub, err := f.publicKey(a, 0, slot).ECDH()
	if err != nil {
		t.Fatal(err)
	}
	z, err := peer.ECDH(pub)
	if err != nil {
		t.Fatal(err)
	}
	return z
}

func rpcRV(err error) uint64 {
	var e *p11rpc.ErrorReply
	if errors.As(err, &e) {
		return e.RV
	}
	if err != nil {
		return ckrGeneralError
	}
	return ckrOK
}

// C_DeriveKey as p11-kit 0.25+ clients send it (CK_ECDH1_DERIVE_PARAMS serialized), then the
// value read back and the key destroyed, all over the wire.
func TestRPCDeriveKey(t *testing.T) {
	f := newFixture(t, "strict-2fa", nil)
	for _, proto := range []p11rpc.Protocol{p11rpc.Protocol1, p11rpc.Protocol2} {
		c := dialApp(t, f.srv, proto)
		s, err := ulongResult(c.Call(p11rpc.CallOpenSession, func(w *p11rpc.RequestWriter) { w.Ulong(slotID); w.Ulong(ckfSerialSession) }))
		if err != nil {
			t.Fatalf("protocol %d: C_OpenSession: %v", proto, err)
		}
		peer, _ := ecdh.P256().GenerateKey(rand.Reader)
		key, err := ulongResult(c.Call(p11rpc.CallDeriveKey, func(w *p11rpc.RequestWriter) {
			w.Ulong(s)
			w.Mechanism(p11rpc.Mechanism{Type: ckmECDH1Derive, Param: p11rpc.ECDH1DeriveParams{KDF: ckdNull, PublicData: peer.PublicKey().Bytes()}})
			w.Ulong(handleOf(0x9E, ckoPrivateKey))
			w.Attributes([]p11rpc.Attribute{p11rpc.UlongAttribute(ckaClass, ckoSecretKey), p11rpc.UlongAttribute(ckaKeyType, ckkGenericSecret)})
		}))
		if err != nil {
			t.Fatalf("protocol %d: C_DeriveKey: %v", proto, err)
		}
		reqs := []p11rpc.AttributeRequest{{Type: ckaValue, Capacity: 32}}
		r, err := c.Call(p11rpc.CallGetAttributeValue, func(w *p11rpc.RequestWriter) {
			w.Ulong(s)
			w.Ulong(key)
			w.AttributeRequests(reqs)
		})
		if err != nil {
			t.Fatalf("protocol %d: C_GetAttributeValue: %v", proto, err)
		}
		res, err := r.Attributes(reqs)
		if err != nil {
			t.Fatal(err)
		}
		if want := f.sharedSecret(t, 0x9E, peer); !bytes.Equal(res[0].Value, want) {
			t.Errorf("protocol %d: CKA_VALUE %x, want Z %x", proto, res[0].Value, want)
		}
		_, err = c.Call(p11rpc.CallDestroyObject, func(w *p11rpc.RequestWriter) { w.Ulong(s); w.Ulong(key) })
		if err != nil {
			t.Errorf("protocol %d: C_DestroyObject: %v", proto, err)
		}
		_, err = c.Call(p11rpc.CallDestroyObject, func(w *p11rpc.RequestWriter) { w.Ulong(s); w.Ulong(key) })
		if rpcRV(err) != ckrObjectHandleInvalid {
			t.Errorf("protocol %d: C_DestroyObject again: %v, want CKR_OBJECT_HANDLE_INVALID", proto, err)
		}
	}
}

// A thread blocked in C_WaitForSlotEvent holds up none of the other calls on its connection
// (calls are otherwise served in order on the connection's goroutine); the removal answers it.
func TestRPCWaitForSlotEventDoesNotBlock(t *testing.T) {
	f := newFixture(t, "strict-2fa", nil)
	c := dialApp(t, f.srv, p11rpc.Protocol0)
	wait, err := c.Send(p11rpc.CallWaitForSlotEvent, func(w *p11rpc.RequestWriter) { w.Ulong(0) })
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		r, err := c.Call(p11rpc.CallGetSlotList, func(w *p11rpc.RequestWriter) { w.Byte(1); w.UlongBufferSize(4) })
		if err != nil {
			t.Fatalf("C_GetSlotList %d while another thread waits: %v", i, err)
		}
		if slots, _, err := r.UlongArray(); err != nil || len(slots) != 1 {
			t.Fatalf("C_GetSlotList %d: %v, %v", i, slots, err)
		}
	}
	f.dev.Card.Remove()
	r, err := c.Receive(p11rpc.CallWaitForSlotEvent, wait)
	if err != nil {
		t.Fatalf("C_WaitForSlotEvent after the removal: %v", err)
	}
	if slot, err := r.Ulong(); err != nil || slot != slotID {
		t.Fatalf("C_WaitForSlotEvent after the removal: slot %d, %v", slot, err)
	}
}

package pkcs11srv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"tokenlab/internal/unixsock"
	"tokenlab/pkcs11srv/p11rpc"
)

// Aliases: the template types are the wire codec's.
type (
	// AttributeRequest asks for one attribute; Capacity 0 means "only the size".
	AttributeRequest = p11rpc.AttributeRequest
)

// maxWaiting bounds the C_WaitForSlotEvent calls of one connection waiting at once: a client
// may have a thread or two blocked in it while others work, never many.
const maxWaiting = 4

// Serve accepts p11-kit RPC connections on ln until ctx ends; each connection is one
// application. Peers of another user are refused; a connection that sends something malformed
// is closed, with the reason logged, and the others go on.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	var backoff time.Duration
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of descriptors, or a connection aborted before it was accepted: the
			// listener is still good. Wait a little, as net/http does, and go on.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.cfg.Log.Warn("pkcs11: accept failed; retrying", "err", err, "in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		backoff = 0
		cr, err := unixsock.Peer(c)
		if err != nil {
			s.cfg.Log.Warn("pkcs11: refused a connection", "err", err)
			c.Close()
			continue
		}
		name := fmt.Sprintf("pid %d", cr.PID)
		if comm := unixsock.ProcessName(cr.PID); comm != "" {
			name = fmt.Sprintf("%s (pid %d)", comm, cr.PID)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.ServeConn(ctx, c, name); err != nil {
				s.cfg.Log.Info("pkcs11: connection closed", "app", name, "reason", err)
			}
		}()
	}
}

// ServeConn serves one application on rw until it hangs up (nil), ctx ends, or it sends
// something malformed (the reason).
func (s *Server) ServeConn(ctx context.Context, rw io.ReadWriteCloser, name string) error {
	defer rw.Close()
	stop := context.AfterFunc(ctx, func() { rw.Close() })
	defer stop()
	if c, ok := rw.(interface{ SetDeadline(time.Time) error }); ok {
		// A peer that connects and says nothing must not hold a goroutine for ever.
		c.SetDeadline(time.Now().Add(handshakeTimeout))
		defer c.SetDeadline(time.Time{})
	}
	proto, err := p11rpc.ServerHandshake(rw)
	if err != nil {
		return err
	}
	if c, ok := rw.(interface{ SetDeadline(time.Time) error }); ok {
		c.SetDeadline(time.Time{})
	}
	if uc, ok := rw.(*net.UnixConn); ok {
		// From here on a request costs no sysmon wake (see unixsock.Conn).
		if c, err := unixsock.NewConn(uc); err == nil {
			rw = c
		}
	}
	app := s.NewApp(name)
	ctx, cancel := context.WithCancel(ctx)
	// At the end, in this order: waiting calls are cancelled, they finish, and then the
	// application closes (its login ends as its policy says).
	var wg sync.WaitGroup
	defer app.Close(context.Background())
	defer wg.Wait()
	defer cancel()

	var wmu sync.Mutex
	reply := func(code uint32, body []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return p11rpc.WriteFrame(rw, p11rpc.Frame{Code: code, Body: body})
	}
	// Calls are served one after another on this goroutine, in the order they came: an App
	// serializes them on its lock anyway, and a goroutine per call doubled the server's CPU
	// per signature (wakeups and scheduling, not work). Only C_WaitForSlotEvent, which may
	// block for as long as the card stays put, is served on a goroutine of its own, so a
	// thread waiting for an event never holds up the other threads of its application.
	sem := make(chan struct{}, maxWaiting)
	failed := make(chan error, 1)
	fr := p11rpc.NewFrameReader(rw, 0) // a request is usually one read, not two
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		req, err := p11rpc.ParseRequest(f.Body, proto)
		if err != nil {
			return fmt.Errorf("frame %#x: %w", f.Code, err) // §1.3: the reference server hangs up too
		}
		select {
		case err := <-failed:
			return err
		default:
		}
		if req.Call != p11rpc.CallWaitForSlotEvent {
			body, err := s.dispatch(ctx, app, req, proto)
			if carriesPIN(req.Call) {
				clear(f.Body)
			}
			if err != nil {
				return err
			}
			if err := reply(f.Code, body); err != nil {
				return err
			}
			continue
		}
		select {
		case sem <- struct{}{}:
		default:
			if err := reply(f.Code, p11rpc.ErrorBody(ckrFunctionFailed)); err != nil {
				return err
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			body, err := s.dispatch(ctx, app, req, proto)
			if err == nil {
				err = reply(f.Code, body)
			}
			if err != nil {
				select {
				case failed <- err:
				default:
				}
				cancel()
				rw.Close() // wakes the reading loop
			}
		}()
	}
}

// handshakeTimeout bounds the wait for a new connection's handshake.
const handshakeTimeout = 10 * time.Second

// carriesPIN reports whether a call's arguments hold a PIN, wiped once the call is done.
func carriesPIN(c p11rpc.Call) bool {
	switch c {
	case p11rpc.CallLogin, p11rpc.CallLoginUser, p11rpc.CallInitPIN, p11rpc.CallSetPIN, p11rpc.CallInitToken, p11rpc.CallInitToken2:
		return true
	}
	return false
}

// dispatch runs one call and returns the reply body: the call's response, or an ERROR message.
//
// A handler that panics is a bug: the call answers CKR_GENERAL_ERROR, and the error returned
// closes the connection, as its application's state can no longer be trusted; the other
// connections go on.
func (s *Server) dispatch(ctx context.Context, app *App, req *p11rpc.Request, proto p11rpc.Protocol) (body []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.cfg.Log.Error("pkcs11: a call panicked", "call", req.Call, "app", app.name, "panic", r, "stack", string(debug.Stack()))
			body, err = p11rpc.ErrorBody(ckrGeneralError), fmt.Errorf("call %v panicked: %v", req.Call, r)
		}
	}()
	return s.call(ctx, app, req, proto), nil
}

func (s *Server) call(ctx context.Context, app *App, req *p11rpc.Request, proto p11rpc.Protocol) []byte {
	h, ok := handlers[req.Call]
	if !ok {
		return p11rpc.ErrorBody(ckrFunctionNotSupported)
	}
	resp := p11rpc.NewResponse(req.Call, proto)
	err := h(ctx, app, req, resp)
	var r RV
	switch {
	case err == nil:
	case errors.As(err, &r):
		return p11rpc.ErrorBody(uint64(r))
	default:
		// An argument that would not decode: the codec knows which return value it deserves.
		return p11rpc.ErrorBody(p11rpc.ErrorRV(err))
	}
	body, err := resp.Bytes()
	if err != nil {
		s.cfg.Log.Error("pkcs11: encoding a reply", "call", req.Call, "err", err)
		return p11rpc.ErrorBody(ckrGeneralError)
	}
	return body
}

// handler decodes a call's arguments (in signature order), runs it and writes its results.
// It returns an RV for a PKCS#11 error, and a codec error for undecodable arguments.
type handler func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error

// args reads the arguments named by the letters of the signature into the pointers, in order.
func args(req *p11rpc.Request, dst ...any) error {
	for _, d := range dst {
		var err error
		switch d := d.(type) {
		case *uint64:
			*d, err = req.Ulong()
		case *byte:
			*d, err = req.Byte()
		case *[]byte: // ay: a NULL pointer is nil
			var null bool
			*d, null, err = req.ByteArray()
			if null {
				*d = nil
			} else if *d == nil {
				*d = []byte{}
			}
		case *uint32: // fy: a byte buffer's capacity
			*d, err = req.BufferSize()
		case *ulongCap: // fu: a CK_ULONG array's capacity
			var n uint32
			n, err = req.UlongBufferSize()
			*d = ulongCap(n)
		case *Mechanism:
			var m p11rpc.Mechanism
			if m, err = req.Mechanism(); err == nil {
				*d = mechanism(m)
			}
		case *[]Attribute:
			*d, err = req.Attributes()
		case *[]AttributeRequest:
			*d, err = req.AttributeRequests()
		default:
			panic(fmt.Sprintf("pkcs11srv: args: %T", d)) // a bug in a handler, not input
		}
		if err != nil {
			return err
		}
	}
	return req.Done()
}

// ulongCap is the capacity of a CK_ULONG array argument (fu).
type ulongCap uint32

// mechanism converts the codec's mechanism.
func mechanism(m p11rpc.Mechanism) Mechanism {
	out := Mechanism{Type: uint64(m.Type)}
	switch p := m.Param.(type) {
	case p11rpc.PSSParams:
		out.PSS = &PSSParams{Hash: p.HashAlg, MGF: p.MGF, SaltLen: p.SaltLen}
	case p11rpc.OAEPParams:
		out.OAEP = &OAEPParams{Hash: p.HashAlg, MGF: p.MGF, Source: p.Source, Label: p.SourceData}
	case p11rpc.ECDH1DeriveParams:
		out.ECDH = &ECDH1Params{KDF: p.KDF, SharedData: p.SharedData, PublicData: p.PublicData}
	case p11rpc.RawParam:
		out.Param = p
	}
	return out
}

// output writes the ay result of a call with an output buffer: the data, or only its length
// for a size query or a buffer too small (§2.5).
func output(resp *p11rpc.Response, data []byte, n int, err error) error {
	switch {
	case err == RV(ckrBufferTooSmall), err == nil && data == nil:
		resp.ByteArrayLength(uint32(n))
		return nil
	case err != nil:
		return err
	}
	resp.ByteArray(data)
	return nil
}

func capacity(c uint32) int {
	if c == p11rpc.NonNullEmptyBuffer {
		return 0
	}
	return int(c)
}

var handlers = map[p11rpc.Call]handler{
	p11rpc.CallInitialize: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var hs, reserved []byte
		var hasReserved byte
		if err := args(req, &hs, &hasReserved, &reserved); err != nil {
			return err
		}
		if string(hs) != p11rpc.InitializeMagic {
			return RV(ckrDeviceError)
		}
		return app.Initialize()
	},
	p11rpc.CallFinalize: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		if err := args(req); err != nil {
			return err
		}
		return app.Finalize(ctx)
	},
	p11rpc.CallGetInfo: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		if err := args(req); err != nil {
			return err
		}
		info, err := app.GetInfo()
		if err != nil {
			return err
		}
		resp.Version(2, 40)
		resp.String(info.Manufacturer, 32)
		resp.Ulong(0)
		resp.String(info.Description, 32)
		resp.Version(info.Major, info.Minor)
		return nil
	},
	p11rpc.CallGetSlotList: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var present byte
		var max ulongCap
		if err := args(req, &present, &max); err != nil {
			return err
		}
		slots, err := app.GetSlotList(present != 0)
		if err != nil {
			return err
		}
		if int(max) < len(slots) {
			resp.UlongArrayLength(uint32(len(slots)))
			return nil
		}
		resp.UlongArray(slots)
		return nil
	},
	p11rpc.CallGetSlotInfo: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var slot uint64
		if err := args(req, &slot); err != nil {
			return err
		}
		info, err := app.GetSlotInfo(slot)
		if err != nil {
			return err
		}
		resp.String(info.Description, 64)
		resp.String(info.Manufacturer, 32)
		resp.Ulong(info.Flags)
		resp.Version(5, 0)
		resp.Version(0, 1)
		return nil
	},
	p11rpc.CallGetTokenInfo: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var slot uint64
		if err := args(req, &slot); err != nil {
			return err
		}
		t, err := app.GetTokenInfo(ctx, slot)
		if err != nil {
			return err
		}
		resp.String(t.Label, 32)
		resp.String(t.Manufacturer, 32)
		resp.String(t.Model, 16)
		resp.String(t.Serial, 16)
		for _, v := range []uint64{t.Flags, t.MaxSessions, t.Sessions, t.MaxRWSessions, t.RWSessions, t.MaxPINLen, t.MinPINLen,
			ckUnavailable, ckUnavailable, ckUnavailable, ckUnavailable} {
			resp.Ulong(v)
		}
		resp.Version(t.HardwareMajor, t.HardwareMinor)
		resp.Version(t.FirmwareMajor, t.FirmwareMinor)
		resp.String("", 16) // utcTime: no clock on the token
		return nil
	},
	p11rpc.CallGetMechanismList: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var slot uint64
		var max ulongCap
		if err := args(req, &slot, &max); err != nil {
			return err
		}
		list, err := app.GetMechanismList(slot)
		if err != nil {
			return err
		}
		if int(max) < len(list) {
			resp.UlongArrayLength(uint32(len(list)))
			return nil
		}
		resp.UlongArray(list)
		return nil
	},
	p11rpc.CallGetMechanismInfo: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var slot, mech uint64
		if err := args(req, &slot, &mech); err != nil {
			return err
		}
		info, err := app.GetMechanismInfo(slot, mech)
		if err != nil {
			return err
		}
		resp.Ulong(info.MinKeySize)
		resp.Ulong(info.MaxKeySize)
		resp.Ulong(info.Flags)
		return nil
	},
	p11rpc.CallOpenSession: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var slot, flags uint64
		if err := args(req, &slot, &flags); err != nil {
			return err
		}
		h, err := app.OpenSession(ctx, slot, flags)
		if err != nil {
			return err
		}
		resp.Ulong(h)
		return nil
	},
	p11rpc.CallCloseSession: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h uint64
		if err := args(req, &h); err != nil {
			return err
		}
		return app.CloseSession(ctx, h)
	},
	p11rpc.CallCloseAllSessions: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var slot uint64
		if err := args(req, &slot); err != nil {
			return err
		}
		return app.CloseAllSessions(ctx, slot)
	},
	p11rpc.CallGetSessionInfo: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h uint64
		if err := args(req, &h); err != nil {
			return err
		}
		info, err := app.GetSessionInfo(h)
		if err != nil {
			return err
		}
		resp.Ulong(info.Slot)
		resp.Ulong(info.State)
		resp.Ulong(info.Flags)
		resp.Ulong(info.DeviceError)
		return nil
	},
	p11rpc.CallSetPIN: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h uint64
		var old, next []byte
		if err := args(req, &h, &old, &next); err != nil {
			return err
		}
		return app.SetPIN(ctx, h, old, next)
	},
	p11rpc.CallLogin: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h, user uint64
		var pin []byte
		if err := args(req, &h, &user, &pin); err != nil {
			return err
		}
		defer clear(pin)
		return app.Login(ctx, h, user, pin)
	},
	p11rpc.CallLogout: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h uint64
		if err := args(req, &h); err != nil {
			return err
		}
		return app.Logout(ctx, h)
	},
	p11rpc.CallGetAttributeValue: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h, obj uint64
		var reqs []AttributeRequest
		if err := args(req, &h, &obj, &reqs); err != nil {
			return err
		}
		results, err := app.GetAttributeValue(ctx, h, obj, reqs)
		var r RV
		if err != nil && (!errors.As(err, &r) || !inlineRV(r)) {
			return err // anything but the four inline values is an ERROR reply (§1.3)
		}
		out := make([]p11rpc.AttributeResult, len(results))
		for i, res := range results {
			out[i] = p11rpc.AttributeResult{Type: res.Type}
			switch {
			case res.Status == ckrOK && res.Value == nil:
				out[i].Kind, out[i].Size = p11rpc.ResultSizeOnly, uint32(res.Length)
			case res.Status == ckrOK:
				out[i].Kind, out[i].Value = p11rpc.ResultValue, res.Value
			default:
				out[i].Kind = p11rpc.ResultUnavailable
			}
		}
		resp.Attributes(out)
		resp.Ulong(rvOf(err))
		return nil
	},
	p11rpc.CallFindObjectsInit: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h uint64
		var tmpl []Attribute
		if err := args(req, &h, &tmpl); err != nil {
			return err
		}
		return app.FindObjectsInit(ctx, h, tmpl)
	},
	p11rpc.CallFindObjects: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h uint64
		var max ulongCap
		if err := args(req, &h, &max); err != nil {
			return err
		}
		objs, err := app.FindObjects(h, int(max))
		if err != nil {
			return err
		}
		resp.UlongArray(objs)
		return nil
	},
	p11rpc.CallFindObjectsFinal: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h uint64
		if err := args(req, &h); err != nil {
			return err
		}
		return app.FindObjectsFinal(h)
	},
	p11rpc.CallSignInit: initHandler((*App).SignInit),
	p11rpc.CallSign: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h uint64
		var data []byte
		var c uint32
		if err := args(req, &h, &data, &c); err != nil {
			return err
		}
		sig, n, err := app.Sign(ctx, h, data, capacity(c))
		return output(resp, sig, n, err)
	},
	p11rpc.CallSignUpdate: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h uint64
		var part []byte
		if err := args(req, &h, &part); err != nil {
			return err
		}
		return app.SignUpdate(h, part)
	},
	p11rpc.CallSignFinal: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h uint64
		var c uint32
		if err := args(req, &h, &c); err != nil {
			return err
		}
		sig, n, err := app.SignFinal(ctx, h, capacity(c))
		return output(resp, sig, n, err)
	},
	p11rpc.CallVerifyInit: initHandler((*App).VerifyInit),
	p11rpc.CallVerify: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h uint64
		var data, sig []byte
		if err := args(req, &h, &data, &sig); err != nil {
			return err
		}
		return app.Verify(h, data, sig)
	},
	p11rpc.CallVerifyUpdate: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h uint64
		var part []byte
		if err := args(req, &h, &part); err != nil {
			return err
		}
		return app.VerifyUpdate(h, part)
	},
	p11rpc.CallVerifyFinal: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h uint64
		var sig []byte
		if err := args(req, &h, &sig); err != nil {
			return err
		}
		return app.VerifyFinal(h, sig)
	},
	p11rpc.CallDecryptInit: initHandler((*App).DecryptInit),
	p11rpc.CallDecrypt: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h uint64
		var data []byte
		var c uint32
		if err := args(req, &h, &data, &c); err != nil {
			return err
		}
		pt, n, err := app.Decrypt(ctx, h, data, capacity(c))
		return output(resp, pt, n, err)
	},
	p11rpc.CallDigestInit: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h uint64
		var m Mechanism
		if err := args(req, &h, &m); err != nil {
			return err
		}
		return app.DigestInit(h, m)
	},
	p11rpc.CallDigest: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h uint64
		var data []byte
		var c uint32
		if err := args(req, &h, &data, &c); err != nil {
			return err
		}
		d, n, err := app.Digest(h, data, capacity(c))
		return output(resp, d, n, err)
	},
	p11rpc.CallDigestUpdate: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h uint64
		var part []byte
		if err := args(req, &h, &part); err != nil {
			return err
		}
		return app.DigestUpdate(h, part)
	},
	p11rpc.CallDigestFinal: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h uint64
		var c uint32
		if err := args(req, &h, &c); err != nil {
			return err
		}
		d, n, err := app.DigestFinal(h, capacity(c))
		return output(resp, d, n, err)
	},
	p11rpc.CallGenerateKeyPair: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h uint64
		var m Mechanism
		var pubT, privT []Attribute
		if err := args(req, &h, &m, &pubT, &privT); err != nil {
			return err
		}
		pub, priv, err := app.GenerateKeyPair(ctx, h, m, pubT, privT)
		if err != nil {
			return err
		}
		resp.Ulong(pub)
		resp.Ulong(priv)
		return nil
	},
	p11rpc.CallDeriveKey: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h, base uint64
		var m Mechanism
		var tmpl []Attribute
		if err := args(req, &h, &m, &base, &tmpl); err != nil {
			return err
		}
		key, err := app.DeriveKey(ctx, h, m, base, tmpl)
		if err != nil {
			return err
		}
		resp.Ulong(key)
		return nil
	},
	p11rpc.CallDestroyObject: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h, obj uint64
		if err := args(req, &h, &obj); err != nil {
			return err
		}
		return app.DestroyObject(ctx, h, obj)
	},
	p11rpc.CallSeedRandom: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h uint64
		var seed []byte
		if err := args(req, &h, &seed); err != nil {
			return err
		}
		return app.SeedRandom(h)
	},
	p11rpc.CallGenerateRandom: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h uint64
		var c uint32
		if err := args(req, &h, &c); err != nil {
			return err
		}
		// The length is the caller's buffer: C_GenerateRandom fills it. A zero-length request
		// gets an empty answer (pkcs11-tool --test asks for 0 bytes, P6).
		b, err := app.GenerateRandom(ctx, h, capacity(c))
		if err != nil {
			return err
		}
		resp.ByteArray(b)
		return nil
	},
	p11rpc.CallWaitForSlotEvent: func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var flags uint64
		if err := args(req, &flags); err != nil {
			return err
		}
		slot, err := app.WaitForSlotEvent(ctx, flags)
		if err != nil {
			return err
		}
		resp.Ulong(slot)
		return nil
	},
}

// initHandler serves the C_*Init calls that take a session, a mechanism and a key (uMu).
func initHandler(f func(*App, context.Context, uint64, Mechanism, uint64) error) handler {
	return func(ctx context.Context, app *App, req *p11rpc.Request, resp *p11rpc.Response) error {
		var h, key uint64
		var m Mechanism
		if err := args(req, &h, &m, &key); err != nil {
			return err
		}
		return f(app, ctx, h, m, key)
	}
}

// inlineRV reports the return values a C_GetAttributeValue reply carries itself (§1.3).
func inlineRV(r RV) bool {
	switch r {
	case ckrAttributeSensitive, ckrAttributeTypeInvalid, ckrBufferTooSmall:
		return true
	}
	return false
}

package pkcs11srv

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"net"
	"sync"
	"testing"
	"time"

	"tokenlab/emulator/piv"
	"tokenlab/emulator/state"
	"tokenlab/emulator/yubikey"
	"tokenlab/middleware"
	"tokenlab/middleware/pivclient"
	"tokenlab/pkcs11srv/p11rpc"
)

// fuzzCard is the state of a card with keys under each PIN policy, made once; every fuzz input
// starts from a fresh copy of it.
var fuzzCard = sync.OnceValues(func() (*state.Card, error) {
	d, err := yubikey.New(yubikey.Options{Serial: 4242})
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	c := pivclient.New(d.Card)
	c.Select(ctx)
	if err := c.AuthenticateManagementKey(ctx, pivclient.AlgAES192, piv.DefaultManagementKey); err != nil {
		return nil, err
	}
	for _, k := range []struct{ slot, alg, pin byte }{
		{0x9A, pivclient.AlgECCP256, 2}, {0x9C, pivclient.AlgECCP384, 3}, {0x9D, pivclient.AlgRSA2048, 2}, {0x9E, pivclient.AlgECCP256, 1},
	} {
		if _, err := c.GenerateKey(ctx, k.slot, k.alg, k.pin, 1); err != nil {
			return nil, err
		}
	}
	return d.Document(), nil
})

// secrets returns the private key bytes of the card's keys.
func secrets(doc *state.Card) [][]byte {
	var out [][]byte
	for _, k := range doc.PIV.Keys {
		if p, err := x509.ParsePKCS8PrivateKey(k.Private); err == nil {
			if ec, ok := p.(*ecdsa.PrivateKey); ok {
				b, _ := ec.Bytes()
				out = append(out, b)
			}
		}
	}
	return out
}

// FuzzApplications runs two applications' call sequences against one server, under single logon
// and under a policy whose idle time ends logins on a fake clock the script advances, and checks
// after every call that:
//   - no application sees or uses a private key object without its own login (PKCS #11 §5.6:
//     login is per application, whatever the middleware's single-logon profile does to PINs);
//   - no private key bytes appear in any attribute, signature or random output;
//   - nothing panics.
func FuzzApplications(f *testing.F) {
	f.Add([]byte{0, 0, 2, 0, 6, 3, 7, 0x11, 0x40, 16, 6, 3, 7, 0x11, 0x40})
	f.Add([]byte{0, 0, 16, 0, 2, 0, 6, 3, 8, 0x11, 1, 2, 3, 4, 5, 12, 16, 6, 3})
	f.Add([]byte{0, 0, 2, 0, 7, 0x21, 0x60, 4, 0, 7, 0x21, 0x60, 5, 0, 7, 0x11, 0x40, 13, 0})
	f.Add([]byte{0, 0, 14, 0, 15, 0, 10, 0, 40, 11, 0, 12, 12})
	// Both log in; a idles out 20 minutes while b signs, then a signs.
	f.Add([]byte{0, 0, 0x80, 0, 2, 0, 0x82, 0, 22, 20, 0x87, 0, 0x11, 0x40, 7, 0, 0x11, 0x40, 16, 0, 6, 0, 3})
	doc, err := fuzzCard()
	if err != nil {
		f.Fatal(err)
	}
	keys := secrets(doc)
	peer, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	policies := []string{
		"safenet-single-logon",                           // the strongest temptation to share a login
		"opensc-default+idle=15m+trust-card-status=true", // logins that idle out, on a card another keeps verified
	}
	f.Fuzz(func(t *testing.T, script []byte) {
		for _, spec := range policies {
			pol, err := middleware.ParsePolicy(spec)
			if err != nil {
				t.Fatal(err)
			}
			runApplications(t, doc, keys, peer, pol, script)
		}
	})
}

// runApplications plays one script of FuzzApplications under pol.
func runApplications(t *testing.T, doc *state.Card, keys [][]byte, peer *ecdh.PrivateKey, pol middleware.Policy, script []byte) {
	d, err := yubikey.Load(doc, nil)
	if err != nil {
		t.Fatal(err)
	}
	clock := middleware.NewFakeClock(time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC))
	srv := New(Config{Reader: d.Card, Policy: pol, Clock: clock})
	ctx := context.Background()
	apps := []*App{srv.NewApp("a"), srv.NewApp("b")}
	sessions := [2][]uint64{}
	derived := [2]map[uint64]bool{{}, {}} // secret keys each application derived
	for _, a := range apps {
		a.Initialize()
		defer a.Close(ctx)
	}
	next := func() byte {
		if len(script) == 0 {
			return 0
		}
		b := script[0]
		script = script[1:]
		return b
	}
	check := func(what string, b []byte) {
		for _, k := range keys {
			if len(b) > 0 && bytes.Contains(b, k) {
				t.Fatalf("%s carries private key bytes", what)
			}
		}
	}
	for ops := 0; len(script) > 0 && ops < 64; ops++ {
		op := next()
		i := int(op>>7) & 1 // which application
		a := apps[i]
		sess := func() uint64 {
			if len(sessions[i]) == 0 {
				return uint64(next())
			}
			return sessions[i][int(next())%len(sessions[i])]
		}
		loggedIn := func() bool {
			a.mu.Lock()
			defer a.mu.Unlock()
			return a.user == ckuUser
		}
		switch op & 0x7F % 23 {
		case 0:
			if h, err := a.OpenSession(ctx, slotID, ckfSerialSession|uint64(next()&1)*ckfRWSession); err == nil {
				sessions[i] = append(sessions[i], h)
			}
		case 1:
			a.CloseSession(ctx, sess())
		case 2:
			a.Login(ctx, sess(), ckuUser, []byte("123456"))
		case 3:
			a.Login(ctx, sess(), ckuUser, []byte("000000"))
		case 4:
			a.Login(ctx, sess(), ckuContextSpecific, []byte("123456"))
		case 5:
			a.Logout(ctx, sess())
		case 6:
			h := sess()
			class := uint64(next() % 5)
			if a.FindObjectsInit(ctx, h, []Attribute{{Type: ckaClass, Value: ulong(class)}}) == nil {
				objs, _ := a.FindObjects(h, 100)
				a.FindObjectsFinal(h)
				for _, o := range objs {
					if class == ckoPrivateKey && o != handleOf(0x9E, ckoPrivateKey) && !loggedIn() {
						t.Fatalf("application %d found private key %#x without logging in", i, o)
					}
					if class == ckoSecretKey && !derived[i][o] {
						t.Fatalf("application %d found secret key %#x it did not derive", i, o)
					}
				}
			}
		case 7:
			h, key, c := sess(), uint64(next()), int(next())
			if a.SignInit(ctx, h, Mechanism{Type: ckmECDSA}, key) == nil {
				sig, _, err := a.Sign(ctx, h, bytes.Repeat([]byte{0x42}, 32), c)
				check("a signature", sig)
				if err == nil && sig != nil && key&0xF == 1 && key != handleOf(0x9E, ckoPrivateKey) && !loggedIn() {
					t.Fatalf("application %d signed with %#x without logging in", i, key)
				}
			}
		case 8:
			h, obj := sess(), uint64(next())
			var reqs []AttributeRequest
			for n := int(next() % 6); n > 0; n-- {
				reqs = append(reqs, AttributeRequest{Type: uint32(next()) | uint32(next())<<8, Capacity: uint32(next()) * 4})
			}
			res, _ := a.GetAttributeValue(ctx, h, obj, reqs)
			for _, r := range res {
				check("an attribute", r.Value)
			}
		case 9:
			a.GetTokenInfo(ctx, slotID)
		case 10:
			r, _ := a.GenerateRandom(ctx, sess(), int(next()))
			check("random output", r)
		case 11:
			a.WaitForSlotEvent(ctx, ckfDontBlock)
		case 12:
			if d.Card.Present() {
				d.Card.Remove()
			} else {
				d.Card.Insert()
			}
		case 13:
			h := sess()
			if a.DigestInit(h, Mechanism{Type: ckmSHA256}) == nil {
				a.Digest(h, []byte("x"), int(next()))
			}
		case 14:
			a.Login(ctx, sess(), ckuSO, []byte("010203040506070801020304050607080102030405060708"))
		case 15:
			a.GenerateKeyPair(ctx, sess(), Mechanism{Type: ckmECKeyPairGen},
				[]Attribute{{Type: ckaECParams, Value: oidP256}, {Type: ckaID, Value: []byte{next()%24 + 1}}}, nil)
		case 16:
			a.GetSessionInfo(sess())
		case 17:
			h, key := sess(), uint64(next())
			tmpl := []Attribute{{Type: ckaValueLen, Value: ulong(uint64(next() % 40))}}
			if next()&1 == 1 {
				tmpl = append(tmpl, Attribute{Type: ckaSensitive, Value: boolean(true)})
			}
			k, err := a.DeriveKey(ctx, h, Mechanism{Type: ckmECDH1Derive,
				ECDH: &ECDH1Params{KDF: ckdNull, PublicData: peer.PublicKey().Bytes()}}, key, tmpl)
			if err == nil {
				if key != handleOf(0x9E, ckoPrivateKey) && !loggedIn() {
					t.Fatalf("application %d derived with %#x without logging in", i, key)
				}
				derived[i][k] = true
			}
		case 18:
			h, obj := sess(), uint64(next())
			if len(derived[i]) > 0 && next()&1 == 1 {
				for k := range derived[i] {
					obj = k
					break
				}
			}
			if a.DestroyObject(ctx, h, obj) == nil {
				if !derived[i][obj] {
					t.Fatalf("application %d destroyed %#x, not a key it derived", i, obj)
				}
				delete(derived[i], obj)
			}
		case 19:
			h, key := sess(), uint64(next())
			if a.DecryptInit(ctx, h, Mechanism{Type: []uint64{ckmRSAPKCS, ckmRSAX509, ckmRSAPKCSOAEP}[next()%3],
				OAEP: &OAEPParams{Hash: ckmSHA256, MGF: ckgMGF1SHA256}}, key) == nil {
				ct := bytes.Repeat([]byte{next()}, []int{256, 255, 0}[next()%3])
				pt, _, err := a.Decrypt(ctx, h, ct, int(next())*2)
				check("a plaintext", pt)
				if err == nil && pt != nil && !loggedIn() {
					t.Fatalf("application %d decrypted with %#x without logging in", i, key)
				}
			}
		case 20:
			h, key := sess(), uint64(next())
			mechs := []Mechanism{
				{Type: ckmRSAPKCS}, {Type: ckmSHA256RSAPKCS}, {Type: ckmRSAX509}, {Type: ckmECDSASHA256},
				{Type: ckmRSAPKCSPSS, PSS: &PSSParams{Hash: ckmSHA256, MGF: ckgMGF1SHA256, SaltLen: uint64(next())}},
				{Type: ckmSHA256RSAPKCSPSS, PSS: &PSSParams{Hash: ckmSHA384, MGF: ckgMGF1SHA256, SaltLen: 32}},
			}
			if a.SignInit(ctx, h, mechs[int(next())%len(mechs)], key) == nil {
				sig, _, err := a.Sign(ctx, h, bytes.Repeat([]byte{next()}, int(next())), int(next())*2)
				check("a signature", sig)
				if err == nil && sig != nil && key != handleOf(0x9E, ckoPrivateKey) && !loggedIn() {
					t.Fatalf("application %d signed with %#x without logging in", i, key)
				}
			}
		case 21:
			h, key := sess(), uint64(next())
			mechs := []Mechanism{{Type: ckmRSAPKCS}, {Type: ckmRSAX509}, {Type: ckmECDSA}, {Type: ckmSHA256RSAPKCSPSS,
				PSS: &PSSParams{Hash: ckmSHA256, MGF: ckgMGF1SHA256, SaltLen: uint64(next())}}}
			if a.VerifyInit(ctx, h, mechs[int(next())%len(mechs)], key) == nil {
				a.Verify(h, bytes.Repeat([]byte{next()}, int(next())*2), bytes.Repeat([]byte{next()}, int(next())*2))
			}
		case 22:
			clock.Advance(time.Duration(next()) * time.Minute)
		}
	}
}

// FuzzConnection feeds arbitrary bytes to a server connection after the version byte: the
// connection must end (a malformed frame closes it), never hang or panic, and another
// application on the same server must be unaffected.
func FuzzConnection(f *testing.F) {
	hello := func(call p11rpc.Call, fill func(*p11rpc.RequestWriter)) []byte {
		w := p11rpc.NewRequest(call, p11rpc.Protocol0)
		fill(w)
		b, _ := w.Bytes()
		out, _ := p11rpc.AppendFrame(nil, p11rpc.Frame{Code: 0x10, Options: []byte("client"), Body: b})
		return out
	}
	init := hello(p11rpc.CallInitialize, func(w *p11rpc.RequestWriter) {
		w.ByteArray([]byte(p11rpc.InitializeMagic))
		w.Byte(1)
		w.ByteArray([]byte{0})
	})
	slots := hello(p11rpc.CallGetSlotList, func(w *p11rpc.RequestWriter) { w.Byte(0); w.UlongBufferSize(4) })
	f.Add(append(init, slots...))
	f.Add(append(init, 0, 0, 0, 0x11, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF))
	f.Add(init[:20])
	doc, err := fuzzCard()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		d, err := yubikey.Load(doc, nil)
		if err != nil {
			t.Fatal(err)
		}
		srv := New(Config{Reader: d.Card, Policy: middleware.Profiles[0]})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		client, server := net.Pipe()
		done := make(chan error, 1)
		go func() { done <- srv.ServeConn(ctx, server, "fuzz") }()
		go func() {
			client.Write([]byte{0})
			client.Write(stream)
			client.Close()
		}()
		go func() { // drain replies
			buf := make([]byte, 4096)
			for {
				if _, err := client.Read(buf); err != nil {
					return
				}
			}
		}()
		select {
		case <-done:
		case <-ctx.Done():
			t.Fatal("the connection did not end")
		}
		// Another application is unaffected.
		other := srv.NewApp("other")
		if err := other.Initialize(); err != nil {
			t.Fatal(err)
		}
		if _, err := other.GetSlotList(false); err != nil {
			t.Fatalf("another application after the fuzzed one: %v", err)
		}
		other.Close(context.Background())
	})
}

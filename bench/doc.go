// Package bench measures the ECDSA signing hot path layer by layer, so each layer's cost is a
// ratio to the one below it, taken in the same run: raw crypto/ecdsa, then the same signature
// through APDU encoding, the card runtime, the PIV applet and response decoding. The PKCS#11
// benchmarks (pkcs11_test.go) go on up the stack: middleware, PKCS#11 server, p11-kit RPC and
// the daemon, next to SoftHSM2 loaded directly and behind `p11-kit server`. They start those
// peers themselves on first use, so only -bench runs them.
//
//	go test -run='^$' -bench=. -benchmem -count=10 ./bench | tee new.txt
//	benchstat -filter '.name:/^(Sign|CardSign)$/' -row /curve -col .name new.txt
//
// and for the PKCS#11 paths the commands at the top of pkcs11_test.go.
package bench

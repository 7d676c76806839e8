// Package bench measures the ECDSA signing hot path layer by layer, so each layer's cost is a
// ratio to the one below it, taken in the same run: raw crypto/ecdsa, then the same signature
// through APDU encoding, the card runtime, the PIV applet and response decoding.
//
//	go test -run='^$' -bench=. -benchmem -count=10 ./bench | tee new.txt
//	benchstat -row /curve -col .name new.txt
package bench

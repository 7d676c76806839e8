module tokenlab

go 1.26.0

require (
	golang.org/x/crypto v0.59.0
	golang.org/x/sys v0.50.0
)

require filippo.io/bigmod v0.1.0

require github.com/go-piv/piv-go/v2 v2.6.0

require golang.org/x/term v0.48.0

require github.com/miekg/pkcs11 v1.1.2

require (
	github.com/rogpeppe/go-internal v1.14.1
	golang.org/x/tools v0.26.0 // indirect
)

# tokenlab — make targets. `make test` is what CI runs (.ci/run); `make demo` is the main job.

GO      ?= go
BIN     := bin/tokenlab
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages of the real peers the interop tests start (see interop/peers_test.go, which names the
# package of every missing program).
PEERS := pcscd vsmartcard-vpcd libpcsclite-dev pkgconf opensc opensc-pkcs11 \
         yubico-piv-tool ykcs11 yubikey-manager pinentry-tty \
         p11-kit p11-kit-modules softhsm2 gnutls-bin libnss3-tools openssh-client openssh-server \
         gcc libc6-dev libp11-kit-dev \
         strongswan-charon strongswan-swanctl libstrongswan-standard-plugins libstrongswan-extra-plugins \
         libcharon-extra-plugins libcharon-extauth-plugins util-linux chromium \
         python3 python3-asyncssh python3-openssl

.PHONY: all build test unit interop peers demo bench fuzz vet clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/tokenlab

# Installs what is missing (as root), then runs every test, real peers included.
test: peers vet
	$(GO) test -count=1 -timeout 30m ./...

# Tests that need no peer.
unit: vet
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /interop)

interop: peers
	$(GO) test -count=1 -v -timeout 30m ./interop/

vet:
	$(GO) vet ./...
	$(GO) vet -tags record ./ssh/internal/... # the fuzz-seed recorders (record_test.go)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi

# Idempotent: installs only the packages that are missing, without recommends.
peers:
	@missing=$$(for p in $(PEERS); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	else \
		echo "peers: all installed"; \
	fi

# The FortiClient and SecureCRT cases under single logon and strict-2fa; non-zero if either
# stops showing what it should.
demo: build
	$(BIN) demo

# Signing hot path, layer by layer; compare runs with benchstat.
bench: peers
	$(GO) test -run='^$$' -bench=. -benchmem -count=10 -timeout 60m ./bench/ | tee bench.out
	@if command -v benchstat >/dev/null; then \
		benchstat -filter '.name:/^(Sign|CardSign)$$/' -row /curve -col .name bench.out; \
		benchstat -filter '.name:/PKCS11(Sign|Cycle|SessionInfo)/' -row .name \
			-col '/via@(softhsm softhsm-p11kit tokenlab-p11kit tokenlab-gorpc tokenlab-inproc tokenlab-app)' bench.out; \
		benchstat -filter .name:PKCS11Apps -row /via -col /apps bench.out; \
	else echo "compare with benchstat (go install golang.org/x/perf/cmd/benchstat@latest): see bench/doc.go"; fi

# A short campaign on each fuzz target (FUZZTIME per target).
FUZZTIME ?= 30s
fuzz:
	@$(GO) test -list '^Fuzz' ./... | awk '/^Fuzz/{f=f" "$$1} /^ok/{if(f!="")print $$2 f; f=""}' | \
	while read -r pkg targets; do \
		for f in $$targets; do \
			echo "== $$pkg $$f"; $(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

clean:
	rm -rf bin bench.out

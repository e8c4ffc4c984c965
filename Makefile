GO ?= go
# Keep the whole suite well under 20 minutes on 2 cores. Packages run one at a
# time (-p 1): the ECDSA keygen tests are CPU-bound and would starve each other.
TEST_TIMEOUT ?= 18m

.PHONY: all build test ts-test vectors chaos load vet fmt fixtures deps demo bench dist clean

all: build

build:
	$(GO) build ./...

deps:
	bash softhsm-test/install-deps.sh

# The tests load Paillier pre-params from testdata/preparams.json (committed).
# `make fixtures` regenerates that file (slow: minutes per set).
fixtures:
	$(GO) run ./cmd/genfixtures -out testdata/preparams.json -count 7

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1)

test: deps vet ts-test
	$(GO) test -count=1 -p 1 -timeout $(TEST_TIMEOUT) ./...

# The TypeScript client (clients/typescript): unit tests on the shared vectors
# of testdata/vectors, then end to end against `signerd dev` and
# `signer-relay` built from this tree (about a minute). `npm ci` installs the
# locked packages when node_modules is missing (a clean clone).
NPM ?= npm
ts-test:
	cd clients/typescript && { test -d node_modules || $(NPM) ci --no-audit --no-fund; } && GO=$(GO) $(NPM) test

# Regenerate testdata/vectors after a change of the wire format (the Go tests
# and the TypeScript tests read them; protocol's TestVectorsUpToDate fails
# when they are stale).
vectors:
	$(GO) run ./cmd/gentestvectors -out testdata/vectors

# Faults under load: 3 signerd processes, 2 clients x 150 sign requests, one
# node killed with SIGKILL and restarted, the NATS server restarted; every
# request must get exactly one terminal result (make test runs 2 x 20).
chaos: deps
	SIGNER_CHAOS_N=150 $(GO) test -count=1 -run '^TestChaos$$' -v -timeout 30m ./cmd/signerd/ | grep -E 'chaos|kill|restart|--- |^ok|FAIL'

# Go native fuzzers over the parsers of untrusted input (docs/hostile-input.md),
# FUZZTIME each, one at a time (-fuzz takes one target per package run). Their
# seeds (testdata/fuzz/) also run under `make test`. A crash leaves its input
# in the package's testdata/fuzz/FuzzX/: keep it as a regression seed.
FUZZTIME ?= 30s
FUZZ_TARGETS = \
	./protocol:FuzzRequest ./protocol:FuzzVerifyResult ./policy:FuzzParsePolicy \
	./signer/transport:FuzzRoundMessage ./hsm:FuzzOpenBlob ./signer/config:FuzzParseConfig \
	./hsm/pkcs11:FuzzParseURI ./hsm/tpm:FuzzParseURI
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; echo "== $$name ($$pkg, $(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) -parallel 1 $$pkg; \
	done

# Load: 4 clients x 250 sign requests (4 in flight each) on a 2-of-3
# cluster; success rate, p50/p95/p99, and nothing left behind (goroutines,
# NATS subscriptions). make test runs 4 x 25.
load: deps
	SIGNER_LOAD_N=250 $(GO) test -count=1 -run '^TestLoad$$' -v -timeout 30m ./signer/devcluster/ | grep -E 'load:|left behind|--- |^ok|FAIL'

# A local 3-node cluster on SoftHSM2: wallet, two signatures, independent checks.
demo:
	bash scripts/demo.sh

# Sealing and identity signing per backend (Go benchmarks), then the raw
# in-process tss-lib ceremonies beside the full node path (client, NATS, three
# nodes on SoftHSM2), alternating batches, with node/raw ratios; then signing
# with 1 wallet beside 10,000 wallets in every node's store, with store bytes
# and heap per wallet and the time of signerctl status / store inspect.
bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 200x ./hsm/
	SIGNER_BENCH=1 $(GO) test -count=1 -run '^TestCompareRawVsNode$$' -v -timeout 60m ./signer/devcluster/ | grep -vE '^(=== RUN|time=|[0-9]{4}/)' 
	SIGNER_BENCH=1 $(GO) test -count=1 -run '^TestScaleWallets$$' -v -timeout 60m ./signer/devcluster/ | grep -vE '^(=== RUN|time=|[0-9]{4}/)'
	SIGNER_BENCH=1 $(GO) test -count=1 -run '^TestRelayLatency$$' -v -timeout 20m ./relay/ | grep -E 'relay latency|burst:|--- |^ok|FAIL'

# Release tarballs in dist/ (binaries, systemd units, install.sh, docs; and a
# source tarball with vendor/ for offline rebuilds); see scripts/dist.sh.
dist:
	GO=$(GO) bash scripts/dist.sh

clean:
	rm -rf bin dist .demo clients/typescript/dist

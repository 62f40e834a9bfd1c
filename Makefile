# tether — see README.md. Every target works on a fresh clone with Go and (for images) Docker.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# adaptivestackstart=0: goroutines start small instead of at the average stack size, which the
# TLS handshakes inflate; an idle node's read loop then costs a smaller stack (see cloudhub).
LDFLAGS := -s -w -X main.version=$(VERSION) -X runtime.godebugDefault=adaptivestackstart=0
BIN := bin
TEST_TIMEOUT ?= 18m
FUZZTIME ?= 30s

.PHONY: build test demo bench bench-full images fuzz clean

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...
	@ls -1 $(BIN)

# All tests, with the race detector. Integration tests build the binaries themselves.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

# A cloud, an edge and a simulated device on the embedded defaults, in ./data/demo.
demo: build
	./scripts/demo.sh

# Benchmarks, each beside a baseline measured in the same run.
bench: build
	$(GO) run ./bench -size default

bench-full: build
	$(GO) run ./bench -size full

# Static binaries in FROM-scratch images (no image is pulled).
images: build
	docker build -f Dockerfile.cloud -t tether-cloud:$(VERSION) .
	docker build -f Dockerfile.edge -t tether-edge:$(VERSION) .

# Runs every fuzz target for FUZZTIME and keeps new corpus entries under testdata/fuzz.
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

clean:
	rm -rf $(BIN) data

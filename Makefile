# Panorama. `make run` starts it on one machine; `make test` installs what
# the tests need and runs them.
export GOTOOLCHAIN := auto
export GOFLAGS := -buildvcs=false -tags=slicelabels
# A static binary, as Prometheus and Thanos release theirs: no libc at run
# time, pure-Go DNS and zstd; and no dynamic linking, which on this kernel
# also kept ~30 MiB more of the executable resident.
export CGO_ENABLED := 0

GO        ?= go
BIN       := $(CURDIR)/.cache/bin
VERSION   ?= 0.1.0
LDFLAGS   := -X github.com/prometheus/common/version.Version=$(VERSION) \
             -X github.com/prometheus/common/version.Branch=main \
             -X github.com/prometheus/common/version.BuildUser=make
PROM_VERSION := 3.9.1
THANOS_VERSION := 0.42.5
KUBE_VERSION := v1.34.4
# Debian packages the tests use as real peers.
DEB_PACKAGES := prometheus prometheus-node-exporter prometheus-alertmanager etcd-server victoria-metrics
TEST_TIMEOUT ?= 45m

.PHONY: all build run test test-deps bench lint fmt clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o panorama ./cmd/panorama

# Until the all-in-one mode exists: a collector scraping a real
# node-exporter, itself and tracing; a federator over it; tracing with its
# embedded store (examples/run.sh).
run: build
	@command -v prometheus-node-exporter >/dev/null || $(MAKE) --no-print-directory deb-packages
	@bash examples/run.sh

test: test-deps
	$(GO) vet ./...
	$(GO) test -timeout $(TEST_TIMEOUT) ./...

# Everything a test needs that is not Go source in this module: Debian's
# peers, and binaries built from pinned modules under tools/ into .cache/bin
# (only when missing).
test-deps: deb-packages $(BIN)/prometheus $(BIN)/promtool $(BIN)/kube-apiserver $(BIN)/thanos $(BIN)/telemetrygen

deb-packages:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(BIN)/prometheus $(BIN)/promtool:
	@mkdir -p $(BIN)
	cd tools/prometheus && GOFLAGS=-buildvcs=false $(GO) build -o $(BIN)/$(notdir $@) \
		-ldflags '-X github.com/prometheus/common/version.Version=$(PROM_VERSION)' \
		github.com/prometheus/prometheus/cmd/$(notdir $@)

# Thanos' Querier, a real peer of the federator in both directions. Thanos
# needs the slicelabels layout (and netgo for its DNS resolvers).
$(BIN)/thanos:
	@mkdir -p $(BIN)
	cd tools/thanos && GOFLAGS=-buildvcs=false $(GO) build -tags netgo,slicelabels -o $(BIN)/thanos \
		-ldflags '-X github.com/prometheus/common/version.Version=$(THANOS_VERSION)' \
		github.com/thanos-io/thanos/cmd/thanos

# The same Prometheus with the labels layout Panorama must use (Thanos'
# StoreAPI needs slicelabels): the benchmarks' same-layout reference, which
# separates what the layout costs from what Panorama's own code costs.
$(BIN)/prometheus-slicelabels:
	@mkdir -p $(BIN)
	cd tools/prometheus && GOFLAGS=-buildvcs=false $(GO) build -tags slicelabels -o $(BIN)/prometheus-slicelabels \
		-ldflags '-X github.com/prometheus/common/version.Version=$(PROM_VERSION)' \
		github.com/prometheus/prometheus/cmd/prometheus

# OpenTelemetry's load generator, for the tracing role's load test.
$(BIN)/telemetrygen:
	@mkdir -p $(BIN)
	GOBIN=$(BIN) GOFLAGS=-buildvcs=false $(GO) install github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen@v0.161.0

# Jaeger v2 with its Badger store, the tracing benchmark's peer. Build-only
# module: `go get` fills its go.sum (no `go mod tidy`, see
# ../shared/DEPENDENCIES.md); the collector modules are not all in the
# checksum database.
$(BIN)/jaeger:
	@mkdir -p $(BIN)
	cd tools/jaeger && GOFLAGS=-buildvcs=false \
		GONOSUMDB=github.com/open-telemetry/opentelemetry-collector-contrib,go.opentelemetry.io/collector \
		$(GO) build -o $(BIN)/jaeger github.com/jaegertracing/jaeger/cmd/jaeger

$(BIN)/kube-apiserver:
	@mkdir -p $(BIN)
	cd tools/kube-apiserver && GOFLAGS=-buildvcs=false $(GO) build -o $(BIN)/kube-apiserver \
		-ldflags '-X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34' \
		k8s.io/kubernetes/cmd/kube-apiserver

bench: test-deps $(BIN)/prometheus-slicelabels $(BIN)/jaeger
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 180m ./bench/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf panorama .cache data

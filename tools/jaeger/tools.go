//go:build tools

// Package tools pins Jaeger v2 (cmd/jaeger, with its Badger store), the
// tracing role's peer in the benchmarks. Build-only: no `go mod tidy` here
// (see ../../../shared/DEPENDENCIES.md); `go get` the package instead.
package tools

import (
	_ "github.com/jaegertracing/jaeger/cmd/jaeger"
)

//go:build tools

// Package tools pins the reference Prometheus and promtool that the tests
// compare against: the same version as the library Panorama is built on.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)

//go:build tools

// Package tools pins the Thanos release whose `thanos query` the e2e tests
// run as a real peer of the federator. It is a build-only module: nothing
// here is imported by Panorama itself.
package tools

import _ "github.com/thanos-io/thanos/cmd/thanos"

//go:build tools

// Package tools pins the kube-apiserver that the discovery tests run against
// (with Debian's etcd): the minor version that matches Panorama's client-go.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"

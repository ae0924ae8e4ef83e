package server

import (
	"testing"

	"github.com/panorama-obs/panorama/internal/testenv"
)

func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	return testenv.SelfSigned(t, dir)
}

package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/panorama-obs/panorama/internal/testenv"
)

// TestMain builds the panorama binary once for every test of the package.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "panorama-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin, err := testenv.BuildPanorama(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	SetPanoramaBinary(bin)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

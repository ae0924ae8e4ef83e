// Package testenv holds what the integration tests and benchmarks of every
// package need from their surroundings.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// GoFlags are the flags every build of this module uses (see
// ../shared/DEPENDENCIES.md: Thanos needs the slicelabels layout).
const GoFlags = "-buildvcs=false -tags=slicelabels"

// BuildPanorama builds ./cmd/panorama into dir as `make build` does (the
// module's flags, the toolchain go.mod asks for, and a static binary:
// no cgo, internal linking, as Prometheus' and Thanos' releases are
// built) and returns the binary's path.
func BuildPanorama(dir string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "panorama")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/panorama")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=auto", "GOFLAGS="+GoFlags, "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/panorama: %v\n%s", err, out)
	}
	return bin, nil
}

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// RepoRoot is the directory holding go.mod, found once by walking up from
// the working directory (a test's working directory is its package's).
func RepoRoot() (string, error) {
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			rootErr = err
			return
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				rootDir = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				rootErr = errors.New("no go.mod above the working directory")
				return
			}
			dir = parent
		}
	})
	return rootDir, rootErr
}

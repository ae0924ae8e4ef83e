//go:build !linux

package e2e

import "syscall"

// sysProcAttr: without Pdeathsig, processes are stopped by t.Cleanup only.
func sysProcAttr() *syscall.SysProcAttr { return nil }

package e2e

import "syscall"

// sysProcAttr makes a started process die with the test binary, even when
// the test binary is killed.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

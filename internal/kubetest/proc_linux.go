package kubetest

import "syscall"

// sysProcAttr puts the child in its own process group (so Stop can kill the
// group) and has the kernel kill it if the test binary dies without running
// cleanups (go test -timeout, os.Exit, SIGKILL). Strictly, Pdeathsig fires
// when the forking OS thread exits; Go retires a thread only when a goroutine
// locked to it (runtime.LockOSThread) exits, which test code does not do.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

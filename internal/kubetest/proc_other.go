//go:build unix && !linux

package kubetest

import "syscall"

// sysProcAttr puts the child in its own process group so Stop can kill the
// group. (No Pdeathsig outside Linux: children outlive a killed test binary.)
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

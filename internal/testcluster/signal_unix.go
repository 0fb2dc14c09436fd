//go:build unix

package testcluster

import "syscall"

// The signals of Freeze and Thaw.
var sigStop, sigCont = syscall.SIGSTOP, syscall.SIGCONT

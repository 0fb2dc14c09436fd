//go:build !unix

package testcluster

import "os"

// Freeze and Thaw fail where there is no SIGSTOP.
var sigStop, sigCont os.Signal

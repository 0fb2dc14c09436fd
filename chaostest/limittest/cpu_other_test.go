//go:build !linux

package limittest

import "time"

// processCPU cannot read another process's CPU time here.
func processCPU(int) (time.Duration, bool) { return 0, false }

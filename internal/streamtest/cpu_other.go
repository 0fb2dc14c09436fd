//go:build !unix

package streamtest

import "time"

// CPUTime returns the CPU time this process has used, user and system,
// or 0 where it cannot be measured, as on this platform.
func CPUTime() time.Duration { return 0 }

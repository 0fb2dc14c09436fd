package limittest

import (
	"time"

	"github.com/peonify/peonify/internal/streamtest"
)

// processCPU returns the CPU time, user and system, that process pid has
// used, and false if it cannot be read.
func processCPU(pid int) (time.Duration, bool) { return streamtest.ProcessCPU(pid) }

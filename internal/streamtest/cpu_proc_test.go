package streamtest

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// ProcessCPU reads this process's CPU time from /proc on Linux, close to
// what getrusage says, and reports false for a process that does not exist.
func TestProcessCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/<pid>/stat")
	}
	for start := time.Now(); time.Since(start) < 50*time.Millisecond; {
	}
	got, ok := ProcessCPU(os.Getpid())
	if !ok || got <= 0 {
		t.Fatalf("ProcessCPU(self) = %s, %v; want a positive time", got, ok)
	}
	if self := CPUTime(); got > self+time.Second {
		t.Errorf("ProcessCPU(self) = %s, more than getrusage's %s", got, self)
	}
	if _, ok := ProcessCPU(-1); ok {
		t.Error("ProcessCPU(-1) reported a time")
	}
}

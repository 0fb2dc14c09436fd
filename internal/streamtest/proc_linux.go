package streamtest

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// Processes returns the live processes whose environment holds name=value,
// as each process a task's command starts inherits it; zombies, which have
// no environment left, are dead.
func Processes(t testing.TB, name, value string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("\x00" + name + "=" + value + "\x00")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue // gone, or not ours
		}
		if bytes.Contains(append(append([]byte{0}, env...), 0), want) {
			pids = append(pids, pid)
		}
	}
	return pids
}

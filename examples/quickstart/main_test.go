package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestQuickstartDrainsOnSIGTERM builds and runs the example, waits until
// it completed a task, sends SIGTERM and expects a clean exit.
func TestQuickstartDrainsOnSIGTERM(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "quickstart")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var out []string
	timeout := time.After(20 * time.Second)
	for sent := false; ; {
		select {
		case l, ok := <-lines:
			if !ok {
				if err := cmd.Wait(); err != nil {
					t.Fatalf("exit: %v\noutput:\n%s", err, strings.Join(out, "\n"))
				}
				last := out[len(out)-1]
				if !strings.HasPrefix(last, "drained: ") || strings.HasPrefix(last, "drained: 0 succeeded") {
					t.Errorf("last line %q, want the drain summary with tasks succeeded", last)
				}
				return
			}
			out = append(out, l)
			if strings.HasPrefix(l, "completed task") && !sent {
				sent = true
				_ = cmd.Process.Signal(syscall.SIGTERM)
			}
		case <-timeout:
			_ = cmd.Process.Kill()
			t.Fatalf("no clean exit within 20s; output:\n%s", strings.Join(out, "\n"))
		}
	}
}

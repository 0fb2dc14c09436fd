package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestProgressOnATerminalRedrawsOneLine(t *testing.T) {
	var buf bytes.Buffer
	start := time.Unix(1000, 0)
	p := &progress{w: &buf, tty: true, total: 1000, start: start}
	p.update(start.Add(100*time.Millisecond), progressCounts{done: 0})
	p.update(start.Add(1100*time.Millisecond), progressCounts{done: 500, retried: 7, dead: 2})
	p.finish(start.Add(2*time.Second), progressCounts{done: 1000, retried: 9, dead: 3})
	out := buf.String()
	want := []string{
		"\r\033[K[                              ] 0/1000    0%  0 tasks/s  retried 0  dead 0",
		"\r\033[K[===============>              ] 500/1000   50%  500 tasks/s  retried 7  dead 2",
		"\r\033[K[==============================] 1000/1000  100%  500 tasks/s  retried 9  dead 3\n",
	}
	if got := strings.Join(want, ""); out != got {
		t.Errorf("terminal output:\n%q\nwant:\n%q", out, got)
	}
}

func TestProgressElsewherePrintsALinePerSecond(t *testing.T) {
	var buf bytes.Buffer
	start := time.Unix(1000, 0)
	p := &progress{w: &buf, total: 10, start: start}
	for i := 1; i <= 10; i++ {
		p.update(start.Add(time.Duration(i)*250*time.Millisecond), progressCounts{done: i})
	}
	p.finish(start.Add(2500*time.Millisecond), progressCounts{done: 10})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 || lines[2] != "progress: 10/10  100%  4 tasks/s  retried 0  dead 0" || strings.Contains(buf.String(), "\r") {
		t.Errorf("plain output:\n%s", buf.String())
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -4200: "-4,200"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

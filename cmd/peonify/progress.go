package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progress reports how far a run of tasks is: a bar redrawn in place on a
// terminal, or a plain line every few seconds otherwise (logs, CI).
type progress struct {
	w     io.Writer
	tty   bool
	total int
	start time.Time

	// Recent (time, done) samples, for the current rate.
	samples []sample
	last    time.Time // when a plain line was last printed
}

type sample struct {
	at   time.Time
	done int
}

// progressCounts are the figures progress shows.
type progressCounts struct {
	done, retried, dead int
}

// interval is how often update should be called.
func (p *progress) interval() time.Duration {
	if p.tty {
		return 100 * time.Millisecond
	}
	return 250 * time.Millisecond
}

// update shows the counts as of now.
func (p *progress) update(now time.Time, c progressCounts) {
	p.samples = append(p.samples, sample{now, c.done})
	for len(p.samples) > 2 && now.Sub(p.samples[1].at) >= time.Second {
		p.samples = p.samples[1:]
	}
	rate := 0.0
	if first := p.samples[0]; now.Sub(first.at) > 0 {
		rate = float64(c.done-first.done) / now.Sub(first.at).Seconds()
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", p.line(c, rate, true))
		return
	}
	if p.last.IsZero() {
		p.last = p.start
	}
	if now.Sub(p.last) >= time.Second {
		p.last = now
		fmt.Fprintln(p.w, p.line(c, rate, false))
	}
}

// finish shows the final counts with the average rate.
func (p *progress) finish(now time.Time, c progressCounts) {
	rate := 0.0
	if el := now.Sub(p.start).Seconds(); el > 0 {
		rate = float64(c.done) / el
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s\n", p.line(c, rate, true))
		return
	}
	fmt.Fprintln(p.w, p.line(c, rate, false))
}

func (p *progress) line(c progressCounts, rate float64, bar bool) string {
	pct := 0
	if p.total > 0 {
		pct = c.done * 100 / p.total
	}
	counts := fmt.Sprintf("%d/%d  %3d%%  %s tasks/s  retried %d  dead %d",
		c.done, p.total, pct, thousands(int(rate+0.5)), c.retried, c.dead)
	if !bar {
		return "progress: " + counts
	}
	const width = 30
	fill := 0
	if p.total > 0 {
		fill = c.done * width / p.total
	}
	head := ""
	if fill < width {
		head = ">"
		if fill == 0 {
			head = " "
		}
	}
	b := strings.Repeat("=", fill) + head + strings.Repeat(" ", max(width-fill-len(head), 0))
	return "[" + b + "] " + counts
}

// thousands formats n with thin separators: 12,345.
func thousands(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

package periodic

import (
	"testing"
	"time"
)

// BenchmarkPrev measures finding the last slot before now, which catch-up
// and stall recovery do once per job.
func BenchmarkPrev(b *testing.B) {
	for _, spec := range []string{"* * * * * *", "0 9 * * MON-FRI", "0 0 1 1 *", "@every 1h"} {
		s, err := parseSpec(spec, time.UTC, someTime)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(spec, func(b *testing.B) {
			for b.Loop() {
				s.prev(someTime)
			}
		})
	}
}

// BenchmarkNewTask measures building one slot's task from its template.
func BenchmarkNewTask(b *testing.B) {
	s, err := parseSpec("@hourly", time.UTC, someTime)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := taskTemplate
	tmpl.Headers = map[string]string{"tenant": "acme"}
	j := &job{name: "report", sched: s, tmpl: &tmpl}
	slot := s.prev(someTime)
	b.ReportAllocs()
	for b.Loop() {
		j.newTask(slot)
	}
}

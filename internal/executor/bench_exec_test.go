//go:build unix

package executor

import (
	"context"
	"testing"

	"github.com/peonify/peonify"
)

// BenchmarkExecExecute measures one task run as a process (true, which
// ignores its input), from many workers at once.
func BenchmarkExecExecute(b *testing.B) {
	e, err := NewExec(ExecConfig{Command: []string{"true"}})
	if err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		t := &peonify.Task{ID: "bench", Type: "job", Payload: []byte(`{"user":42}`), Attempt: 1}
		for pb.Next() {
			if err := e.Execute(context.Background(), t); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkExecExecuteSupervised is BenchmarkExecExecute with each command
// run under a supervisor, the test binary started again.
func BenchmarkExecExecuteSupervised(b *testing.B) {
	e, err := NewExec(ExecConfig{Command: []string{"true"}, Supervise: true})
	if err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		t := &peonify.Task{ID: "bench", Type: "job", Payload: []byte(`{"user":42}`), Attempt: 1}
		for pb.Next() {
			if err := e.Execute(context.Background(), t); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

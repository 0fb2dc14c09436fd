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
	benchExec(b, ExecConfig{Command: []string{"true"}})
}

// BenchmarkExecExecuteSupervised is BenchmarkExecExecute with each command
// run under a supervisor, the test binary started again.
func BenchmarkExecExecuteSupervised(b *testing.B) {
	benchExec(b, ExecConfig{Command: []string{"true"}, Supervise: true})
}

// benchExec runs tasks on an Exec with cfg from many workers at once.
func benchExec(b *testing.B, cfg ExecConfig) {
	e, err := NewExec(cfg)
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

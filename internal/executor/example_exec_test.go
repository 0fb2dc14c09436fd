//go:build unix

package executor_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/executor"
)

// An Exec executor runs a command per task, with the payload on stdin and
// the task in the environment. A failed run's error ends with the
// command's stderr.
func ExampleNewExec() {
	e, err := executor.NewExec(executor.ExecConfig{
		Shell:  `echo "$PEONIFY_TASK_TYPE $PEONIFY_TASK_ID, attempt $PEONIFY_TASK_ATTEMPT: $(cat)"; [ "$PEONIFY_TASK_ATTEMPT" -gt 1 ] || { echo "not yet" >&2; exit 3; }`,
		Stdout: os.Stdout,
	})
	if err != nil {
		log.Fatal(err)
	}
	t := &peonify.Task{ID: "t1", Type: "resize", Payload: []byte(`{"w":64}`), Attempt: 1}
	fmt.Println("error:", e.Execute(context.Background(), t))
	t.Attempt = 2
	fmt.Println("error:", e.Execute(context.Background(), t))
	// Output:
	// resize t1, attempt 1: {"w":64}
	// error: command exited with status 3: not yet
	// resize t1, attempt 2: {"w":64}
	// error: <nil>
}

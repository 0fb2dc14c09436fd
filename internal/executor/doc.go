// Package executor holds the built-in task handlers of the peonify command,
// which let teams that do not write Go run their tasks with Peonify:
//
//   - HTTP delivers a task's payload to a URL and reads the answer: 2xx is
//     done, and its body the task's result; 408, 429, 5xx and network
//     errors are retried (honouring Retry-After), any other status is a
//     permanent failure.
//   - Exec runs a command with the payload on its standard input: exit
//     status 0 is done (with ExecConfig.StdoutResult, its standard output
//     is the task's result), anything else is retried, and a timeout or a
//     shutdown kills the command's whole process group; supervised, the
//     group also dies at once with this process, even by SIGKILL.
//
// Results are kept only by stores that keep them (a peonify.Tracker); a
// result larger than peonify.MaxResultLen fails the task there, for good,
// rather than be cut.
//
// Both are peonify.Handler values, built from a config whose field names
// are those of the peonify.yaml file:
//
//	h, err := executor.NewHTTP(executor.HTTPConfig{URL: "https://example.com/hooks/email"})
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer h.Close()
//	err = p.AddTaskList(peonify.TaskList{"email": h})
package executor

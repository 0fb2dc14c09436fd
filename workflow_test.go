package peonify_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
)

func TestWorkflowPrepareFillsTasks(t *testing.T) {
	w := &peonify.Workflow{}
	a := w.Add(&peonify.Task{Type: "a"})
	b := w.Add(&peonify.Task{Type: "b"}, a)
	c := w.Add(&peonify.Task{Type: "c"}, a)
	d := w.Add(&peonify.Task{Type: "d", AllowFailedParents: true}, b, c)
	now := time.Now()
	if err := w.Prepare(now); err != nil {
		t.Fatal(err)
	}
	if w.ID == "" {
		t.Fatal("Prepare left the workflow ID empty")
	}
	for _, task := range w.Tasks {
		if task.ID == "" || task.Workflow != w.ID || !task.EnqueuedAt.Equal(now) {
			t.Errorf("task %+v: want an ID, Workflow %s and EnqueuedAt filled", task, w.ID)
		}
	}
	if got := strings.Join(d.Parents, ","); got != b.ID+","+c.ID {
		t.Errorf("d.Parents = %s, want b and c", got)
	}
}

func TestWorkflowPrepareRejectsBadGraphs(t *testing.T) {
	task := func(id string, parents ...string) *peonify.Task {
		return &peonify.Task{ID: id, Type: "t", Parents: parents}
	}
	cases := []struct {
		name  string
		w     *peonify.Workflow
		wants string
	}{
		{"empty", &peonify.Workflow{}, "no tasks"},
		{"cycle", &peonify.Workflow{Tasks: []*peonify.Task{task("a", "c"), task("b", "a"), task("c", "b"), task("d")}}, "cycle"},
		{"unknown parent", &peonify.Workflow{Tasks: []*peonify.Task{task("a"), task("b", "x")}}, "depends on x"},
		{"self", &peonify.Workflow{Tasks: []*peonify.Task{task("a", "a")}}, "itself"},
		{"parent twice", &peonify.Workflow{Tasks: []*peonify.Task{task("a"), task("b", "a", "a")}}, "twice"},
		{"duplicate ID", &peonify.Workflow{Tasks: []*peonify.Task{task("a"), task("a")}}, "two tasks"},
		{"foreign task", &peonify.Workflow{ID: "w1", Tasks: []*peonify.Task{{ID: "a", Type: "t", Workflow: "w2"}}}, "belongs to workflow w2"},
		{"invalid task", &peonify.Workflow{Tasks: []*peonify.Task{{ID: "a"}}}, "no Type"},
		{"long ID", &peonify.Workflow{ID: strings.Repeat("w", peonify.MaxIDLen+1), Tasks: []*peonify.Task{task("a")}}, "longer than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.w.Prepare(time.Now())
			var invalid *peonify.InvalidTaskError
			if !errors.As(err, &invalid) || !strings.Contains(err.Error(), c.wants) {
				t.Fatalf("Prepare = %v; want an *InvalidTaskError saying %q", err, c.wants)
			}
		})
	}
}

func TestTaskWithParentsNeedsAWorkflow(t *testing.T) {
	for _, task := range []*peonify.Task{
		{Type: "t", Parents: []string{"a"}},
		{Type: "t", AllowFailedParents: true},
	} {
		if err := task.Validate(); err == nil || !strings.Contains(err.Error(), "EnqueueWorkflow") {
			t.Errorf("Validate(%+v) = %v; want an error pointing to EnqueueWorkflow", task, err)
		}
	}
	if err := (&peonify.Task{Type: "t", Workflow: "w"}).Validate(); err != nil {
		t.Errorf("a task labelled with a workflow: %v", err)
	}
}

func TestWorkflowStateOf(t *testing.T) {
	cases := []struct {
		counts map[peonify.State]int
		want   peonify.WorkflowState
	}{
		{map[peonify.State]int{peonify.StateDone: 3, peonify.StateWaiting: 1}, peonify.WorkflowRunning},
		{map[peonify.State]int{peonify.StateDone: 3, peonify.StateRunning: 1}, peonify.WorkflowRunning},
		{map[peonify.State]int{peonify.StateDone: 3, peonify.StatePending: 0}, peonify.WorkflowSucceeded},
		{map[peonify.State]int{peonify.StateDone: 1, peonify.StateDead: 1, peonify.StateCancelled: 2}, peonify.WorkflowFailed},
		{map[peonify.State]int{peonify.StateDone: 1, peonify.StateCancelled: 2}, peonify.WorkflowCancelled},
	}
	for _, c := range cases {
		if got := peonify.WorkflowStateOf(c.counts); got != c.want {
			t.Errorf("WorkflowStateOf(%v) = %s, want %s", c.counts, got, c.want)
		}
	}
}

func TestListOptionsTakeTheNewStates(t *testing.T) {
	for _, s := range []peonify.State{peonify.StateWaiting, peonify.StateCancelled} {
		if _, err := (peonify.ListOptions{State: s}).Normalize(); err != nil {
			t.Errorf("Normalize(%s): %v", s, err)
		}
	}
	if !peonify.StateCancelled.Finished() || peonify.StateWaiting.Finished() {
		t.Error("cancelled must be a finished state, waiting not")
	}
}

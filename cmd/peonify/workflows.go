package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/peonify/peonify"
)

// This file holds what the CLI does with the stores that keep the state of
// their tasks (peonify.Tracker) and run workflows (peonify.WorkflowStore):
// tasks cancel and wait, the workflows command, and enqueue --workflow.

// tracker returns the store's Tracker, or an error wrapping
// errors.ErrUnsupported that says which stores have one.
func (s *store) tracker() (peonify.Tracker, error) {
	tr, ok := peonify.As[peonify.Tracker](s.stream)
	if !ok {
		return nil, fmt.Errorf("the %s does not keep the state of its tasks (results, progress, cancellation): only %s stores do: %w",
			s.desc, orList(trackKinds()), errors.ErrUnsupported)
	}
	return tr, nil
}

// workflowStore returns the store's WorkflowStore, or an error wrapping
// errors.ErrUnsupported that says which stores have one.
func (s *store) workflowStore() (peonify.WorkflowStore, error) {
	ws, ok := peonify.As[peonify.WorkflowStore](s.stream)
	if !ok {
		return nil, fmt.Errorf("the %s does not run workflows: only %s stores do: %w",
			s.desc, orList(trackKinds()), errors.ErrUnsupported)
	}
	return ws, nil
}

func (c *cli) tasksCancel(cmd *command, args []string) error {
	f, args, err := c.parseIDs(cmd, args, "give the IDs of the tasks to cancel (a whole workflow: peonify workflows cancel ID)")
	if err != nil {
		return err
	}
	return c.withStore(f, func(ctx context.Context, st *store) error {
		tr, err := st.tracker()
		if err != nil {
			return err
		}
		n, err := tr.Cancel(ctx, args...)
		if err != nil {
			return err
		}
		return c.reportChanged(f, "cancelled", n, "", len(args), "finished already or not in the "+st.desc)
	})
}

func (c *cli) tasksWait(cmd *command, args []string) error {
	fs, f := newInspectFlags(cmd)
	timeout := fs.Duration("timeout", 0, "give up after this `duration`, e.g. 30s or 5m, with exit status 4 (default: wait until the task finishes)")
	args, err := c.parse(cmd, fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(args) != 1:
		return usagef("give one task ID")
	case *timeout < 0:
		return usagef("--timeout must not be negative")
	}
	id := args[0]
	return c.withStore(f, func(ctx context.Context, st *store) error {
		tr, err := st.tracker()
		if err != nil {
			return err
		}
		wctx := ctx
		if *timeout > 0 {
			var cancel context.CancelFunc
			wctx, cancel = context.WithTimeout(ctx, *timeout)
			defer cancel()
		}
		ti, err := tr.Wait(wctx, id)
		switch {
		case errors.Is(err, peonify.ErrNotFound):
			return fmt.Errorf("no task %q in the %s (or it finished and the store did not keep it: only tasks with a result or in a workflow are kept once done)", id, st.desc)
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			return &statusError{exitTimeout, fmt.Errorf("task %s has not finished after %s", id, *timeout)}
		case err != nil:
			return err
		}
		if f.json {
			if err := c.printJSON(toJSON(ti, true)); err != nil {
				return err
			}
		}
		if ti.State != peonify.StateDone {
			msg := fmt.Sprintf("task %s is %s", id, ti.State)
			if ti.LastError != "" {
				msg += ": " + ti.LastError
			}
			return &statusError{exitFailed, errors.New(msg)}
		}
		if !f.json {
			_, err = c.stdout.Write(ti.Result)
		}
		return err
	})
}

func workflowsCommand() *command {
	return &command{
		name:    "workflows",
		summary: "look at a workflow's tasks, or cancel it",
		usage:   "workflows get|cancel [--json] ID STORE",
		about: `Workflows looks at the workflows of a store (enqueued with
'peonify enqueue --workflow FILE' or a program's EnqueueWorkflow):

  get      show a workflow's state, its tasks' counts by state, and its
           tasks with their states and parents
  cancel   cancel every task of a workflow that has not finished

Only ` + orList(trackKinds()) + ` stores run workflows.

` + storeHelp,
		example: `peonify workflows get nightly-2030-01-02 --store peonify.db
peonify workflows cancel nightly-2030-01-02 --store peonify.db`,
		run: (*cli).workflows,
	}
}

// workflowSubcommands lists the subcommands of workflows.
func workflowSubcommands() []*command {
	return []*command{
		{name: "workflows get", usage: "workflows get [--json] ID STORE", run: (*cli).workflowsGet,
			about:   fmt.Sprintf("Get shows a workflow: its state (running, succeeded, failed or cancelled), when it\nwas created and last changed, its tasks' counts by state, and its first %d\ntasks by ID with their states and parents.\n\n", peonify.MaxWorkflowTasksListed) + storeHelp,
			example: `peonify workflows get nightly-2030-01-02 --store peonify.db --json`},
		{name: "workflows cancel", usage: "workflows cancel [--json] ID STORE", run: (*cli).workflowsCancel,
			about:   "Cancel cancels every task of the workflow that has not finished: waiting,\npending and scheduled tasks never run, and running ones are stopped when\ntheir processor next extends their lease.\n\n" + storeHelp,
			example: `peonify workflows cancel nightly-2030-01-02 --store peonify.db`},
	}
}

func (c *cli) workflows(cmd *command, args []string) error {
	return c.dispatch(cmd, args, "workflows", workflowSubcommands(), "get or cancel")
}

// workflowJSON is a workflow in --json output.
type workflowJSON struct {
	ID        string                `json:"id"`
	State     peonify.WorkflowState `json:"state"`
	Counts    map[peonify.State]int `json:"counts"`
	Total     int                   `json:"total"`
	CreatedAt *time.Time            `json:"created_at,omitempty"`
	UpdatedAt *time.Time            `json:"updated_at,omitempty"`
	Tasks     []taskJSON            `json:"tasks"` // the first MaxWorkflowTasksListed by ID
}

// withWorkflow parses the flags of a workflows subcommand and its one
// workflow ID, and calls fn with the store the flags name, its
// WorkflowStore and the ID.
func (c *cli) withWorkflow(cmd *command, args []string, fn func(ctx context.Context, f *inspectFlags, st *store, ws peonify.WorkflowStore, id string) error) error {
	f, id, err := c.parseOneID(cmd, args, "workflow")
	if err != nil {
		return err
	}
	return c.withStore(f, func(ctx context.Context, st *store) error {
		ws, err := st.workflowStore()
		if err != nil {
			return err
		}
		return fn(ctx, f, st, ws, id)
	})
}

func (c *cli) workflowsGet(cmd *command, args []string) error {
	return c.withWorkflow(cmd, args, func(ctx context.Context, f *inspectFlags, st *store, ws peonify.WorkflowStore, id string) error {
		wf, err := ws.GetWorkflow(ctx, id)
		if errors.Is(err, peonify.ErrNotFound) {
			return fmt.Errorf("no workflow %q in the %s (a finished workflow's tasks are removed after the store's result retention)", id, st.desc)
		}
		if err != nil {
			return err
		}
		total := 0
		for _, n := range wf.Counts {
			total += n
		}
		if f.json {
			out := workflowJSON{ID: wf.ID, State: wf.State, Counts: map[peonify.State]int{}, Total: total,
				CreatedAt: optTime(wf.CreatedAt), UpdatedAt: optTime(wf.UpdatedAt), Tasks: make([]taskJSON, len(wf.Tasks))}
			for _, s := range peonify.States {
				out.Counts[s] = wf.Counts[s]
			}
			for i, ti := range wf.Tasks {
				out.Tasks[i] = toJSON(ti, false)
			}
			return c.printJSON(out)
		}
		now := time.Now()
		tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "ID:\t%s\n", wf.ID)
		fmt.Fprintf(tw, "State:\t%s\n", wf.State)
		if !wf.CreatedAt.IsZero() {
			fmt.Fprintf(tw, "Created:\t%s\n", stamp(wf.CreatedAt, now))
		}
		if !wf.UpdatedAt.IsZero() {
			fmt.Fprintf(tw, "Updated:\t%s\n", stamp(wf.UpdatedAt, now))
		}
		var counts []string
		for _, s := range peonify.States {
			if n := wf.Counts[s]; n > 0 {
				counts = append(counts, fmt.Sprintf("%d %s", n, s))
			}
		}
		fmt.Fprintf(tw, "Tasks:\t%s (%d in all)\n", strings.Join(counts, ", "), total)
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(wf.Tasks) == 0 {
			return nil
		}
		fmt.Fprintln(c.stdout)
		tw = tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tTYPE\tSTATE\tATTEMPTS\tPROGRESS\tPARENTS\tUPDATED\tLAST ERROR")
		for _, ti := range wf.Tasks {
			parents := "-"
			if len(ti.Task.Parents) > 0 {
				parents = oneLine(strings.Join(ti.Task.Parents, ","), 60)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", ti.Task.ID, ti.Task.Type, ti.State, ti.Attempts,
				cmp.Or(progressPercent(ti), "-"), parents, ago(ti.UpdatedAt, now), oneLine(ti.LastError, 60))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if total > len(wf.Tasks) {
			fmt.Fprintf(c.stderr, "showing the first %d of the workflow's %d tasks, by ID\n", len(wf.Tasks), total)
		}
		return nil
	})
}

func (c *cli) workflowsCancel(cmd *command, args []string) error {
	return c.withWorkflow(cmd, args, func(ctx context.Context, f *inspectFlags, st *store, ws peonify.WorkflowStore, id string) error {
		n, err := ws.CancelWorkflow(ctx, id)
		if errors.Is(err, peonify.ErrNotFound) {
			return fmt.Errorf("no workflow %q in the %s", id, st.desc)
		}
		if err != nil {
			return err
		}
		if f.json {
			return c.printJSON(map[string]int{"cancelled": n})
		}
		fmt.Fprintf(c.stdout, "cancelled %d %s of workflow %s\n", n, plural(n, "task", "tasks"), id)
		return nil
	})
}

// workflowFile is the document of enqueue --workflow.
type workflowFile struct {
	ID    string             `json:"id"`
	Tasks []workflowFileTask `json:"tasks"`
}

// workflowFileTask is one task of a workflowFile: the fields of a line of
// --jsonl, and its parents.
type workflowFileTask struct {
	jsonlTask
	Parents            []string `json:"parents"`
	AllowFailedParents bool     `json:"allow_failed_parents"`
}

// workflowFields lists the fields of a workflowFileTask, for errors.
const workflowFields = "type, payload, id, parents, allow_failed_parents, delay, run_at, priority, max_attempts, unique_key, key, headers"

// readWorkflow reads and checks the document of enqueue --workflow: from
// the file at path, or stdin for "-".
func (c *cli) readWorkflow(path string, now time.Time) (*peonify.Workflow, error) {
	var (
		b   []byte
		err error
	)
	from := path
	if path == "-" {
		from = "stdin"
		b, err = io.ReadAll(c.stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, usagef("--workflow: %v", err)
	}
	var doc workflowFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, usagef(`--workflow: %s is not a workflow document: %s (want {"id": "...", "tasks": [{"id": "a", "type": "fetch"}, {"type": "resize", "parents": ["a"]}]}; task fields: %s)`,
			from, strings.TrimPrefix(err.Error(), "json: "), workflowFields)
	}
	if dec.More() {
		return nil, usagef("--workflow: %s holds more than one JSON value: give one workflow document", from)
	}
	if len(doc.Tasks) == 0 {
		return nil, usagef(`--workflow: %s has no "tasks"`, from)
	}
	w := &peonify.Workflow{ID: doc.ID, Tasks: make([]*peonify.Task, len(doc.Tasks))}
	for i := range doc.Tasks {
		ft := &doc.Tasks[i]
		where := fmt.Sprintf("--workflow: tasks[%d]", i)
		if ft.ID != "" {
			where += fmt.Sprintf(" (%s)", ft.ID)
		}
		t, err := ft.task(where, now)
		if err != nil {
			return nil, err
		}
		t.Parents, t.AllowFailedParents = ft.Parents, ft.AllowFailedParents
		w.Tasks[i] = t
	}
	if err := w.Prepare(now); err != nil {
		return nil, usagef("--workflow: %s", strings.TrimPrefix(err.Error(), "peonify: "))
	}
	return w, nil
}

// enqueueWorkflow stores w in the store st and prints its ID (with
// jsonOut, its ID, its tasks' IDs and whether it was stored before). A
// workflow stored already is not stored again, and that is not an error,
// so that a script can run the same command again after a failure.
func (c *cli) enqueueWorkflow(ctx context.Context, st *store, w *peonify.Workflow, jsonOut bool) error {
	ws, err := st.workflowStore()
	if err != nil {
		return err
	}
	dup := false
	if err := ws.EnqueueWorkflow(ctx, w); err != nil {
		var de *peonify.DuplicateError
		if !errors.As(err, &de) {
			return err
		}
		if !c.sameWorkflow(ctx, st, w, de.IDs) {
			return fmt.Errorf("nothing was stored: %s are already stored outside workflow %s: give the workflow's tasks other IDs",
				strings.Join(de.IDs, ", "), w.ID)
		}
		dup = true
		fmt.Fprintf(c.stderr, "peonify enqueue: workflow %s is already enqueued: not stored again\n", w.ID)
	}
	if jsonOut {
		ids := make([]string, len(w.Tasks))
		for i, t := range w.Tasks {
			ids[i] = t.ID
		}
		b, err := json.Marshal(struct {
			ID        string   `json:"id"`
			Tasks     []string `json:"tasks"`
			Duplicate bool     `json:"duplicate"`
		}{w.ID, ids, dup})
		if err != nil {
			return err
		}
		_, err = c.stdout.Write(append(b, '\n'))
		return err
	}
	fmt.Fprintln(c.stdout, w.ID)
	if !dup {
		fmt.Fprintf(c.stderr, "peonify enqueue: stored workflow %s (%d %s) in the %s\n", w.ID, len(w.Tasks), plural(len(w.Tasks), "task", "tasks"), st.desc)
	}
	return nil
}

// sameWorkflow reports whether the duplicates that EnqueueWorkflow
// reported are workflow w itself, stored before: its ID, or tasks that
// belong to it.
func (c *cli) sameWorkflow(ctx context.Context, st *store, w *peonify.Workflow, ids []string) bool {
	if slices.Contains(ids, w.ID) {
		return true
	}
	in, ok := inspectorOf(st.stream)
	if !ok || len(ids) == 0 {
		return false
	}
	for _, id := range ids {
		ti, err := in.Get(ctx, id)
		if err != nil || ti.Task.Workflow != w.ID {
			return false
		}
	}
	return true
}

// progressPercent formats a task's progress as "42%", or "" when it
// reported none.
func progressPercent(ti peonify.TaskInfo) string {
	p := ti.Progress
	if p.UpdatedAt.IsZero() && p.Fraction == 0 && p.Message == "" {
		return ""
	}
	return fmt.Sprintf("%d%%", int(p.Fraction*100))
}

// optTime returns a pointer to t, or nil for the zero time.
func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

package httpapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/peonify/peonify"
)

// TaskView is a task as GET /v1/tasks/{id} shows it.
type TaskView struct {
	ID                 string            `json:"id"`
	Type               string            `json:"type"`
	Store              string            `json:"store"`
	State              peonify.State     `json:"state"`
	Attempts           int               `json:"attempts"`
	LastError          string            `json:"last_error,omitempty"`
	Key                string            `json:"key,omitempty"`
	UniqueKey          string            `json:"unique_key,omitempty"`
	Priority           int               `json:"priority"`
	MaxAttempts        int               `json:"max_attempts,omitempty"`
	Headers            map[string]string `json:"headers,omitempty"`
	Payload            json.RawMessage   `json:"payload,omitempty"`
	PayloadBase64      string            `json:"payload_base64,omitempty"`
	EnqueuedAt         time.Time         `json:"enqueued_at,omitzero"`
	RunAt              time.Time         `json:"run_at,omitzero"`
	UpdatedAt          time.Time         `json:"updated_at,omitzero"`
	LeaseUntil         time.Time         `json:"lease_until,omitzero"`
	Result             json.RawMessage   `json:"result,omitempty"`
	ResultBase64       string            `json:"result_base64,omitempty"`
	Progress           *ProgressView     `json:"progress,omitempty"`
	Workflow           string            `json:"workflow,omitempty"`
	Parents            []string          `json:"parents,omitempty"`
	AllowFailedParents bool              `json:"allow_failed_parents,omitempty"`
}

// ProgressView is the last progress a running task reported.
type ProgressView struct {
	Fraction  float64   `json:"fraction"`
	Message   string    `json:"message,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// bytesView shows b as JSON if it is JSON, else as base64.
func bytesView(b []byte) (json.RawMessage, string) {
	if len(b) == 0 {
		return nil, ""
	}
	if json.Valid(b) {
		return json.RawMessage(b), ""
	}
	return nil, base64.StdEncoding.EncodeToString(b)
}

func taskView(st *store, ti peonify.TaskInfo) TaskView {
	t := &ti.Task
	v := TaskView{
		ID: t.ID, Type: t.Type, Store: st.name, State: ti.State, Attempts: ti.Attempts,
		LastError: cmpOr(ti.LastError, t.LastError), Key: t.Key, UniqueKey: t.UniqueKey, Priority: t.Priority,
		MaxAttempts: t.MaxAttempts, Headers: t.Headers, EnqueuedAt: utc(t.EnqueuedAt), RunAt: utc(t.RunAt),
		UpdatedAt: utc(ti.UpdatedAt), Workflow: t.Workflow, Parents: t.Parents, AllowFailedParents: t.AllowFailedParents,
	}
	if ti.State == peonify.StateRunning {
		v.LeaseUntil = utc(ti.LeaseUntil)
	}
	if len(v.Headers) == 0 {
		v.Headers = nil
	}
	v.Payload, v.PayloadBase64 = bytesView(t.Payload)
	v.Result, v.ResultBase64 = bytesView(ti.Result)
	if !ti.Progress.UpdatedAt.IsZero() {
		v.Progress = &ProgressView{Fraction: ti.Progress.Fraction, Message: ti.Progress.Message, UpdatedAt: utc(ti.Progress.UpdatedAt)}
	}
	return v
}

func utc(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC()
}

// taskStore resolves ?store= for a task route.
func (h *Handler) taskStore(r *http.Request) (*store, error) {
	return h.pickStore(r.URL.Query().Get("store"), "store")
}

func (h *Handler) inspector(st *store) error {
	if st.insp == nil {
		return errorf(http.StatusNotImplemented, "", "store %q (%s) cannot show its tasks: it is not a peonify.Inspector", st.name, st.kind)
	}
	return nil
}

// serveGet serves GET /v1/tasks/{id}, with ?wait= a long poll until the
// task finishes.
func (h *Handler) serveGet(w http.ResponseWriter, r *http.Request, _ caller) {
	if err := h.get(w, r); err != nil {
		h.failRequest(w, r, err)
	}
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request) error {
	st, err := h.taskStore(r)
	if err != nil {
		return err
	}
	if err := h.inspector(st); err != nil {
		return err
	}
	var wait time.Duration
	if s := r.URL.Query().Get("wait"); s != "" {
		if wait, err = parseWait(s); err != nil || wait < 0 {
			return errorf(http.StatusBadRequest, "wait", "wait=%q is not a duration such as \"30s\" or a number of seconds", s)
		}
		wait = min(wait, h.cfg.MaxWait)
	}
	id := r.PathValue("id")
	ti, err := h.getTask(r.Context(), st, id)
	if err != nil {
		return err
	}
	if wait > 0 && !ti.State.Finished() && st.tracker != nil {
		if ti, err = h.wait(r.Context(), st, id, wait); err != nil || r.Context().Err() != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, taskView(st, ti))
	return nil
}

// wait waits up to d for the task to finish, and returns it as it is then.
func (h *Handler) wait(ctx context.Context, st *store, id string, d time.Duration) (peonify.TaskInfo, error) {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	done, err := st.tracker.Wait(wctx, id)
	switch {
	case err == nil:
		return done, nil
	case ctx.Err() != nil:
		return done, nil // the client left
	case wctx.Err() != nil:
		return h.getTask(ctx, st, id) // the wait ended: show the task as it is
	case errors.Is(err, peonify.ErrNotFound):
		return done, errorf(http.StatusNotFound, "", "task %q is no longer in store %q: it finished and was not kept (a done task is kept only if it has a result, belongs to a workflow, or the store keeps done tasks), or it was deleted", id, st.name)
	default:
		return done, &storeError{st, "waiting for the task", err}
	}
}

func (h *Handler) getTask(ctx context.Context, st *store, id string) (peonify.TaskInfo, error) {
	ctx, cancel := h.storeCtx(ctx)
	defer cancel()
	ti, err := st.insp.Get(ctx, id)
	switch {
	case errors.Is(err, peonify.ErrNotFound):
		return ti, errorf(http.StatusNotFound, "", "store %q has no task %q (a finished task is kept only if it has a result, belongs to a workflow, or the store keeps done tasks)", st.name, id)
	case err != nil:
		return ti, &storeError{st, "reading the task", err}
	}
	return ti, nil
}

// Changed is the answer of cancel, retry and delete.
type Changed struct {
	ID string `json:"id"`
	// State is the task's state after the call; absent after a delete.
	State peonify.State `json:"state,omitempty"`
}

// serveCancel serves POST /v1/tasks/{id}/cancel.
func (h *Handler) serveCancel(w http.ResponseWriter, r *http.Request, _ caller) {
	if err := h.change(w, r, "cancel"); err != nil {
		h.failRequest(w, r, err)
	}
}

// serveRetry serves POST /v1/tasks/{id}/retry.
func (h *Handler) serveRetry(w http.ResponseWriter, r *http.Request, _ caller) {
	if err := h.change(w, r, "retry"); err != nil {
		h.failRequest(w, r, err)
	}
}

// serveDelete serves DELETE /v1/tasks/{id}.
func (h *Handler) serveDelete(w http.ResponseWriter, r *http.Request, _ caller) {
	if err := h.change(w, r, "delete"); err != nil {
		h.failRequest(w, r, err)
	}
}

// change cancels, retries or deletes one task. A task in a state the
// operation does not apply to is a 409 naming its state.
func (h *Handler) change(w http.ResponseWriter, r *http.Request, op string) error {
	st, err := h.taskStore(r)
	if err != nil {
		return err
	}
	if err := h.inspector(st); err != nil {
		return err
	}
	if op == "cancel" && st.tracker == nil {
		return errorf(http.StatusNotImplemented, "", "store %q (%s) cannot cancel tasks: it is not a peonify.Tracker", st.name, st.kind)
	}
	id := r.PathValue("id")
	ctx, cancel := h.storeCtx(context.WithoutCancel(r.Context()))
	defer cancel()
	var n int
	switch op {
	case "cancel":
		n, err = st.tracker.Cancel(ctx, id)
	case "retry":
		n, err = st.insp.Retry(ctx, id)
	case "delete":
		n, err = st.insp.Delete(ctx, id)
	}
	if err != nil {
		return &storeError{st, op + " of the task", err}
	}
	if n > 0 && op == "delete" {
		writeJSON(w, http.StatusOK, Changed{ID: id})
		return nil
	}
	ti, err := h.getTask(ctx, st, id)
	if err != nil {
		return err
	}
	if n == 0 {
		why := map[string]string{
			"cancel": "only a task that has not finished can be cancelled",
			"retry":  "only a dead task can be retried",
			"delete": "a running task cannot be deleted: cancel it first",
		}[op]
		return errorf(http.StatusConflict, "", "task %q is %s: %s", id, ti.State, why)
	}
	writeJSON(w, http.StatusOK, Changed{ID: id, State: ti.State})
	return nil
}

// StoreView is one store in GET /v1/stores.
type StoreView struct {
	Name string `json:"name"`
	// Kind is the package of the store, such as "sqlitestream".
	Kind string `json:"kind"`
	// Capabilities are what the API can do with the store: "enqueue",
	// "inspect", "track" (results, progress, cancel, ?wait) and
	// "workflows".
	Capabilities []string `json:"capabilities"`
	// Counts are the tasks by state; absent if the store cannot count.
	Counts map[peonify.State]int `json:"counts,omitempty"`
	// Error says why Counts is absent.
	Error string `json:"error,omitempty"`
}

// StoresView is the answer of GET /v1/stores.
type StoresView struct {
	Stores []StoreView `json:"stores"`
}

// serveStores serves GET /v1/stores. A store that fails to count is shown
// with an error rather than failing the whole answer.
func (h *Handler) serveStores(w http.ResponseWriter, r *http.Request, _ caller) {
	out := StoresView{Stores: make([]StoreView, 0, len(h.order))}
	for _, st := range h.order {
		v := StoreView{Name: st.name, Kind: st.kind, Capabilities: []string{}}
		for _, c := range []struct {
			name string
			ok   bool
		}{{"enqueue", st.enq != nil}, {"inspect", st.insp != nil}, {"track", st.tracker != nil}, {"workflows", st.workflow != nil}} {
			if c.ok {
				v.Capabilities = append(v.Capabilities, c.name)
			}
		}
		if st.insp == nil {
			v.Error = "the store cannot count its tasks"
		} else {
			ctx, cancel := h.storeCtx(r.Context())
			counts, err := st.insp.Counts(ctx)
			cancel()
			if err != nil {
				v.Error = fmt.Sprintf("counting the tasks failed: %v", err)
			} else {
				v.Counts = make(map[peonify.State]int, len(peonify.States))
				for _, s := range peonify.States {
					v.Counts[s] = counts[s]
				}
			}
		}
		out.Stores = append(out.Stores, v)
	}
	writeJSON(w, http.StatusOK, out)
}

// WorkflowView is a workflow as GET /v1/workflows/{id} shows it.
type WorkflowView struct {
	ID        string                `json:"id"`
	Store     string                `json:"store"`
	State     peonify.WorkflowState `json:"state"`
	Counts    map[peonify.State]int `json:"counts"`
	CreatedAt time.Time             `json:"created_at,omitzero"`
	UpdatedAt time.Time             `json:"updated_at,omitzero"`
	// Tasks are the first peonify.MaxWorkflowTasksListed tasks by ID,
	// without their results.
	Tasks []TaskView `json:"tasks"`
}

func (h *Handler) workflowStore(r *http.Request) (*store, error) {
	st, err := h.taskStore(r)
	if err != nil {
		return nil, err
	}
	if st.workflow == nil {
		return nil, errorf(http.StatusNotImplemented, "", "store %q (%s) does not run workflows: it is not a peonify.WorkflowStore", st.name, st.kind)
	}
	return st, nil
}

// serveGetWorkflow serves GET /v1/workflows/{id}.
func (h *Handler) serveGetWorkflow(w http.ResponseWriter, r *http.Request, _ caller) {
	st, err := h.workflowStore(r)
	if err != nil {
		h.failRequest(w, r, err)
		return
	}
	id := r.PathValue("id")
	ctx, cancel := h.storeCtx(r.Context())
	defer cancel()
	info, err := st.workflow.GetWorkflow(ctx, id)
	switch {
	case errors.Is(err, peonify.ErrNotFound):
		h.failRequest(w, r, errorf(http.StatusNotFound, "", "store %q has no workflow %q", st.name, id))
		return
	case err != nil:
		h.failRequest(w, r, &storeError{st, "reading the workflow", err})
		return
	}
	v := WorkflowView{ID: info.ID, Store: st.name, State: info.State, Counts: map[peonify.State]int{},
		CreatedAt: utc(info.CreatedAt), UpdatedAt: utc(info.UpdatedAt), Tasks: make([]TaskView, 0, len(info.Tasks))}
	for s, n := range info.Counts {
		v.Counts[s] = n
	}
	for _, ti := range info.Tasks {
		v.Tasks = append(v.Tasks, taskView(st, ti))
	}
	writeJSON(w, http.StatusOK, v)
}

// WorkflowCancelled is the answer of POST /v1/workflows/{id}/cancel.
type WorkflowCancelled struct {
	ID string `json:"id"`
	// Cancelled is how many of its tasks were cancelled.
	Cancelled int `json:"cancelled"`
}

// serveCancelWorkflow serves POST /v1/workflows/{id}/cancel.
func (h *Handler) serveCancelWorkflow(w http.ResponseWriter, r *http.Request, _ caller) {
	st, err := h.workflowStore(r)
	if err != nil {
		h.failRequest(w, r, err)
		return
	}
	id := r.PathValue("id")
	ctx, cancel := h.storeCtx(context.WithoutCancel(r.Context()))
	defer cancel()
	if _, err := st.workflow.GetWorkflow(ctx, id); err != nil {
		if errors.Is(err, peonify.ErrNotFound) {
			h.failRequest(w, r, errorf(http.StatusNotFound, "", "store %q has no workflow %q", st.name, id))
		} else {
			h.failRequest(w, r, &storeError{st, "reading the workflow", err})
		}
		return
	}
	n, err := st.workflow.CancelWorkflow(ctx, id)
	if err != nil {
		h.failRequest(w, r, &storeError{st, "cancelling the workflow", err})
		return
	}
	writeJSON(w, http.StatusOK, WorkflowCancelled{ID: id, Cancelled: n})
}

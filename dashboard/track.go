package dashboard

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/peonify/peonify"
)

// This file holds what the dashboard does with stores that keep the state
// of their tasks (peonify.Tracker: results, progress, cancellation) and
// run workflows (peonify.WorkflowStore).

// ProgressView is the progress a running task reported (see
// peonify.ReportProgress).
type ProgressView struct {
	Fraction  float64   `json:"fraction"` // from 0 to 1
	Message   string    `json:"message,omitempty"`
	UpdatedAt time.Time `json:"updatedAt,omitzero"`
}

// progressView returns ti's progress, or nil if it reported none.
func progressView(ti peonify.TaskInfo) *ProgressView {
	p := ti.Progress
	if p.UpdatedAt.IsZero() && p.Fraction == 0 && p.Message == "" {
		return nil
	}
	return &ProgressView{Fraction: p.Fraction, Message: p.Message, UpdatedAt: p.UpdatedAt}
}

// setResult fills the result fields of v, for one task: up to maxPayload
// bytes, as text, unless the type's payloads are hidden.
func (d *Dashboard) setResult(v *TaskView, ti peonify.TaskInfo) {
	r := ti.Result
	if r == nil {
		return
	}
	v.HasResult, v.ResultSize = true, len(r)
	if d.hidden(ti.Task.Type) {
		v.ResultHidden = true
		return
	}
	v.ResultBinary = !utf8.Valid(r)
	b := r[:min(len(r), maxPayload+utf8.UTFMax)]
	v.Result, v.ResultTruncated = truncate(string(b), maxPayload)
	v.ResultTruncated = v.ResultTruncated || len(r) > len(b)
}

// cancelSelection is the body of POST api/stores/{name}/cancel.
type cancelSelection struct {
	IDs []string `json:"ids"`
}

// serveCancel cancels the given tasks that have not finished.
func (d *Dashboard) serveCancel(w http.ResponseWriter, r *http.Request, st *store) {
	if st.tracker == nil {
		writeError(w, http.StatusNotImplemented, "unsupported",
			fmt.Sprintf("store %q cannot cancel tasks: its Inspector (%T) is not a peonify.Tracker (the embedded store, Postgres, Redis and memstream are)", st.name, st.insp))
		return
	}
	var sel cancelSelection
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(&sel)
	switch {
	case err != nil:
		writeError(w, http.StatusBadRequest, "bad_request", `the body must be JSON: {"ids": ["<task id>", ...]} (`+err.Error()+")")
		return
	case len(sel.IDs) == 0:
		writeError(w, http.StatusBadRequest, "bad_request", `no task selected: send {"ids": ["<task id>", ...]}`)
		return
	case len(sel.IDs) > maxIDs:
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("%d IDs in one request: send at most %d", len(sel.IDs), maxIDs))
		return
	}
	n, err := st.tracker.Cancel(r.Context(), sel.IDs...)
	if err != nil {
		storeError(w, st, "cancelling tasks", err)
		return
	}
	d.invalidate()
	writeJSON(w, http.StatusOK, Result{Count: n})
}

// WorkflowView is the answer of GET api/stores/{name}/workflows/{id}: a
// workflow's state, its tasks' counts by state, and its first
// peonify.MaxWorkflowTasksListed tasks by ID, with payload previews.
type WorkflowView struct {
	ID        string                `json:"id"`
	State     peonify.WorkflowState `json:"state"`
	Counts    map[peonify.State]int `json:"counts"` // every state, zero when none
	Total     int                   `json:"total"`  // tasks in all
	CreatedAt time.Time             `json:"createdAt,omitzero"`
	UpdatedAt time.Time             `json:"updatedAt,omitzero"`
	Tasks     []TaskView            `json:"tasks"`
}

// workflowStore returns the store's WorkflowStore, or answers 501 and
// returns nil.
func workflowStore(w http.ResponseWriter, st *store) peonify.WorkflowStore {
	if st.workflows == nil {
		writeError(w, http.StatusNotImplemented, "unsupported",
			fmt.Sprintf("store %q has no workflows: its Inspector (%T) is not a peonify.WorkflowStore (the embedded store, Postgres, Redis and memstream are)", st.name, st.insp))
	}
	return st.workflows
}

func (d *Dashboard) serveWorkflow(w http.ResponseWriter, r *http.Request, st *store) {
	ws := workflowStore(w, st)
	if ws == nil {
		return
	}
	id := r.PathValue("id")
	wf, err := ws.GetWorkflow(r.Context(), id)
	if errors.Is(err, peonify.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("store %q has no workflow %q", st.name, id))
		return
	}
	if err != nil {
		storeError(w, st, "reading a workflow", err)
		return
	}
	v := WorkflowView{ID: wf.ID, State: wf.State, Counts: make(map[peonify.State]int, len(peonify.States)),
		CreatedAt: wf.CreatedAt, UpdatedAt: wf.UpdatedAt, Tasks: make([]TaskView, 0, len(wf.Tasks))}
	for _, s := range peonify.States {
		v.Counts[s] = wf.Counts[s]
		v.Total += wf.Counts[s]
	}
	for _, ti := range wf.Tasks {
		v.Tasks = append(v.Tasks, d.taskView(ti, d.cfg.PreviewBytes, false))
	}
	writeJSON(w, http.StatusOK, v)
}

func (d *Dashboard) serveCancelWorkflow(w http.ResponseWriter, r *http.Request, st *store) {
	ws := workflowStore(w, st)
	if ws == nil {
		return
	}
	id := r.PathValue("id")
	n, err := ws.CancelWorkflow(r.Context(), id)
	if errors.Is(err, peonify.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("store %q has no workflow %q", st.name, id))
		return
	}
	if err != nil {
		storeError(w, st, "cancelling a workflow", err)
		return
	}
	d.invalidate()
	writeJSON(w, http.StatusOK, Result{Count: n})
}

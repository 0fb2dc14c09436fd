package dashboard

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/peonify/peonify"
)

// TaskView is a task as the API shows it.
type TaskView struct {
	ID          string        `json:"id"`
	Type        string        `json:"type"`
	Key         string        `json:"key,omitempty"`
	State       peonify.State `json:"state"`
	Attempts    int           `json:"attempts"`
	MaxAttempts int           `json:"maxAttempts,omitempty"`
	Priority    int           `json:"priority,omitempty"`
	EnqueuedAt  time.Time     `json:"enqueuedAt,omitzero"`
	RunAt       time.Time     `json:"runAt,omitzero"`
	UpdatedAt   time.Time     `json:"updatedAt,omitzero"`
	LeaseUntil  time.Time     `json:"leaseUntil,omitzero"`
	LastError   string        `json:"lastError,omitempty"`

	// Payload is the payload as text: a preview of Config.PreviewBytes in
	// lists, up to maxPayload for one task. Bytes that are not UTF-8 are
	// replaced with U+FFFD and Binary is set.
	Payload          string `json:"payload"`
	PayloadSize      int    `json:"payloadSize"`
	PayloadTruncated bool   `json:"payloadTruncated,omitempty"`
	PayloadHidden    bool   `json:"payloadHidden,omitempty"`
	Binary           bool   `json:"binary,omitempty"`

	// Headers are shown for one task only, unless hidden.
	Headers map[string]string `json:"headers,omitempty"`

	// Workflow is the workflow the task belongs to, Parents the tasks it
	// waits for, and AllowFailedParents whether it runs even if they fail
	// (see peonify.Workflow).
	Workflow           string   `json:"workflow,omitempty"`
	Parents            []string `json:"parents,omitempty"`
	AllowFailedParents bool     `json:"allowFailedParents,omitempty"`

	// Progress is the last progress the task reported, on a store that
	// keeps it (a peonify.Tracker); absent if none.
	Progress *ProgressView `json:"progress,omitempty"`

	// HasResult is true for a done task with a result, on a store that
	// keeps results. The result itself is shown for one task only, like
	// the payload: Result holds up to 64 KiB of it as text (bytes that are
	// not UTF-8 replaced with U+FFFD, and ResultBinary set), unless the
	// type's payloads are hidden (ResultHidden).
	HasResult       bool   `json:"hasResult,omitempty"`
	Result          string `json:"result,omitempty"`
	ResultSize      int    `json:"resultSize,omitempty"`
	ResultTruncated bool   `json:"resultTruncated,omitempty"`
	ResultHidden    bool   `json:"resultHidden,omitempty"`
	ResultBinary    bool   `json:"resultBinary,omitempty"`
}

// TaskPage is the answer of GET /api/stores/{name}/tasks.
type TaskPage struct {
	Tasks []TaskView `json:"tasks"`
	// Next is the After cursor of the next page; empty on the last page.
	Next string `json:"next,omitempty"`
}

// Limits of the store API.
const (
	defaultPageSize = 50
	maxPageSize     = 500
	maxPayload      = 64 << 10 // payload bytes shown for one task
	maxListError    = 500      // LastError bytes shown in lists
	maxIDs          = 1000     // IDs in one retry or delete
	maxBody         = 1 << 20
)

// withStore resolves the {store} path value.
func (d *Dashboard) withStore(h func(http.ResponseWriter, *http.Request, *store)) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("store")
		st := d.stores[name]
		if st == nil {
			writeError(w, http.StatusNotFound, "not_found",
				fmt.Sprintf("no store named %q; the stores are: %s", name, strings.Join(d.storeNames(), ", ")))
			return
		}
		h(w, r, st)
	}
}

func (d *Dashboard) serveTasks(w http.ResponseWriter, r *http.Request, st *store) {
	q := r.URL.Query()
	opts := peonify.ListOptions{State: peonify.State(q.Get("state")), Type: q.Get("type"), Key: q.Get("key"), After: q.Get("after"), Limit: defaultPageSize}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxPageSize {
			writeError(w, http.StatusBadRequest, "bad_request",
				fmt.Sprintf("limit %q is not a page size: use a number from 1 to %d", l, maxPageSize))
			return
		}
		opts.Limit = n
	}
	opts, err := opts.Normalize()
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("%v (the state= parameter)", err))
		return
	}
	infos, err := st.insp.List(r.Context(), opts)
	if err != nil {
		storeError(w, st, "listing "+string(opts.State)+" tasks", err)
		return
	}
	page := TaskPage{Tasks: make([]TaskView, 0, len(infos))}
	for _, ti := range infos {
		page.Tasks = append(page.Tasks, d.taskView(ti, d.cfg.PreviewBytes, false))
	}
	if len(infos) == opts.Limit {
		page.Next = infos[len(infos)-1].Task.ID
	}
	writeJSON(w, http.StatusOK, page)
}

func (d *Dashboard) serveTask(w http.ResponseWriter, r *http.Request, st *store) {
	ti, err := st.insp.Get(r.Context(), r.PathValue("id"))
	if errors.Is(err, peonify.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("store %q has no task %q", st.name, r.PathValue("id")))
		return
	}
	if err != nil {
		storeError(w, st, "reading a task", err)
		return
	}
	writeJSON(w, http.StatusOK, d.taskView(ti, maxPayload, true))
}

// taskView converts ti, with at most preview bytes of payload; full adds
// the headers and the whole last error.
func (d *Dashboard) taskView(ti peonify.TaskInfo, preview int, full bool) TaskView {
	t := &ti.Task
	v := TaskView{
		ID: t.ID, Type: t.Type, Key: t.Key, State: ti.State, Attempts: ti.Attempts, MaxAttempts: t.MaxAttempts,
		Priority: t.Priority, EnqueuedAt: t.EnqueuedAt, RunAt: t.RunAt, UpdatedAt: ti.UpdatedAt,
		LeaseUntil: ti.LeaseUntil, LastError: cmp.Or(ti.LastError, t.LastError), PayloadSize: len(t.Payload),
		Workflow: t.Workflow, Parents: t.Parents, AllowFailedParents: t.AllowFailedParents, Progress: progressView(ti),
	}
	if full {
		d.setResult(&v, ti)
	} else {
		v.HasResult = ti.Result != nil
	}
	if !full {
		v.LastError, _ = truncate(v.LastError, maxListError)
	}
	switch {
	case d.hidden(t.Type):
		v.PayloadHidden = true
	case preview < 0:
		v.PayloadTruncated = len(t.Payload) > 0
	default:
		v.Binary = !utf8.Valid(t.Payload)
		// Copy no more of a large payload than is shown.
		b := t.Payload[:min(len(t.Payload), preview+utf8.UTFMax)]
		v.Payload, v.PayloadTruncated = truncate(string(b), preview)
		v.PayloadTruncated = v.PayloadTruncated || len(t.Payload) > len(b)
		if full && len(t.Headers) > 0 {
			v.Headers = t.Headers
		}
	}
	return v
}

// truncate returns s cut to at most n bytes at a character boundary, with
// invalid UTF-8 replaced, and whether it cut anything.
func truncate(s string, n int) (string, bool) {
	cut := len(s) > n
	if cut {
		s = s[:n]
		// Drop a character split by the cut.
		for i := 0; i < utf8.UTFMax && len(s) > 0; i++ {
			r, size := utf8.DecodeLastRuneInString(s)
			if r != utf8.RuneError || size != 1 {
				break
			}
			s = s[:len(s)-1]
		}
	}
	return strings.ToValidUTF8(s, "\uFFFD"), cut
}

// Selection is the body of POST /api/stores/{name}/retry and .../delete:
// either some task IDs, or All for every dead task.
type Selection struct {
	IDs []string `json:"ids,omitempty"`
	All bool     `json:"all,omitempty"`
}

// readSelection decodes a Selection and checks that it names some IDs or
// all, not both.
func readSelection(w http.ResponseWriter, r *http.Request) (Selection, bool) {
	var s Selection
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(&s)
	switch {
	case err != nil:
		writeError(w, http.StatusBadRequest, "bad_request",
			`the body must be JSON: {"ids": ["<task id>", ...]} or {"all": true} (`+err.Error()+")")
		return s, false
	case s.All && len(s.IDs) > 0:
		writeError(w, http.StatusBadRequest, "bad_request", `send either "ids" or "all": true, not both`)
		return s, false
	case !s.All && len(s.IDs) == 0:
		writeError(w, http.StatusBadRequest, "bad_request", `no task selected: send {"ids": ["<task id>", ...]} or {"all": true}`)
		return s, false
	case len(s.IDs) > maxIDs:
		writeError(w, http.StatusBadRequest, "bad_request",
			fmt.Sprintf("%d IDs in one request: send at most %d, or {\"all\": true}", len(s.IDs), maxIDs))
		return s, false
	}
	return s, true
}

// Result is the answer of a retry or delete.
type Result struct {
	// Count is how many tasks were retried or deleted.
	Count int `json:"count"`
}

// serveRetry makes dead tasks pending again: the given IDs, or all of
// them.
func (d *Dashboard) serveRetry(w http.ResponseWriter, r *http.Request, st *store) {
	sel, ok := readSelection(w, r)
	if !ok {
		return
	}
	n, err := st.insp.Retry(r.Context(), sel.IDs...) // no IDs: every dead task
	if err != nil {
		storeError(w, st, "retrying tasks", err)
		return
	}
	d.invalidate()
	writeJSON(w, http.StatusOK, Result{Count: n})
}

// serveDelete deletes the given tasks (in any state but running), or with
// All every dead task.
func (d *Dashboard) serveDelete(w http.ResponseWriter, r *http.Request, st *store) {
	sel, ok := readSelection(w, r)
	if !ok {
		return
	}
	var n int
	var err error
	if sel.All {
		n, err = st.insp.Purge(r.Context(), peonify.StateDead)
	} else {
		n, err = st.insp.Delete(r.Context(), sel.IDs...)
	}
	if err != nil {
		storeError(w, st, "deleting tasks", err)
		return
	}
	d.invalidate()
	writeJSON(w, http.StatusOK, Result{Count: n})
}

// PauseState is the answer of pause and resume.
type PauseState struct {
	Paused bool `json:"paused"`
}

func (d *Dashboard) servePause(w http.ResponseWriter, r *http.Request, st *store) {
	d.setPaused(w, r, st, true)
}

func (d *Dashboard) serveResume(w http.ResponseWriter, r *http.Request, st *store) {
	d.setPaused(w, r, st, false)
}

func (d *Dashboard) setPaused(w http.ResponseWriter, r *http.Request, st *store, pause bool) {
	if st.pauser == nil {
		writeError(w, http.StatusNotImplemented, "unsupported",
			fmt.Sprintf("store %q cannot pause: its Inspector (%T) has no Pause, Resume and Paused methods", st.name, st.insp))
		return
	}
	do, what := st.pauser.Resume, "resuming"
	if pause {
		do, what = st.pauser.Pause, "pausing"
	}
	if err := do(r.Context()); err != nil {
		storeError(w, st, what, err)
		return
	}
	d.invalidate()
	writeJSON(w, http.StatusOK, PauseState{Paused: pause})
}

// invalidate drops the shared snapshot after a change, so that the next
// one shows it.
func (d *Dashboard) invalidate() {
	d.snapshots.mu.Lock()
	d.snapshots.json = nil
	d.snapshots.gen++
	d.snapshots.mu.Unlock()
}

func storeError(w http.ResponseWriter, st *store, doing string, err error) {
	status := http.StatusBadGateway
	if errors.Is(err, context.Canceled) {
		status = http.StatusServiceUnavailable
	}
	writeError(w, status, "store_error", fmt.Sprintf("store %q: %s: %v", st.name, doing, err))
}

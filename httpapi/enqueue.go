package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/peonify/peonify"
)

// Created is the answer of POST /v1/tasks (201).
type Created struct {
	ID    string `json:"id"`
	Store string `json:"store"`
	URL   string `json:"url"`
	// Duplicate is true, in a batch's answer, for a task whose ID (or
	// unique key) was already stored: it was not stored again.
	Duplicate bool `json:"duplicate,omitempty"`
}

// BatchCreated is the answer of POST /v1/tasks/batch (201).
type BatchCreated struct {
	Store string    `json:"store"`
	Tasks []Created `json:"tasks"`
}

// WorkflowCreated is the answer of POST /v1/workflows (201).
type WorkflowCreated struct {
	ID    string    `json:"id"`
	Store string    `json:"store"`
	URL   string    `json:"url"`
	Tasks []Created `json:"tasks"`
}

// idempotency is the Idempotency-Key of a request, if it has one.
type idempotency struct {
	key     string // hex hash of the token's name and the key; "" without a key
	reqHash string // hex hash of the route and body
}

// id derives a task or workflow ID from the key.
func (k idempotency) id() string { return "idem-" + k.key }

func (k idempotency) stamp(t *peonify.Task) {
	if k.key == "" {
		return
	}
	if t.Headers == nil {
		t.Headers = make(map[string]string, 2)
	}
	t.Headers[HeaderIdempotencyKey] = k.key
	t.Headers[HeaderRequestHash] = k.reqHash
}

// match tells whether a stored task came from this key: 0 not at all, 1
// from this key and another body, 2 from this very request.
func (k idempotency) match(t *peonify.Task) int {
	switch {
	case t.Headers[HeaderIdempotencyKey] != k.key:
		return 0
	case t.Headers[HeaderRequestHash] != k.reqHash:
		return 1
	}
	return 2
}

// maxIdempotencyKey is the longest Idempotency-Key accepted.
const maxIdempotencyKey = 255

func (h *Handler) idempotency(r *http.Request, c caller, body []byte) (idempotency, error) {
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		return idempotency{}, nil
	}
	if len(key) > maxIdempotencyKey || hasControl(key) {
		return idempotency{}, errorf(http.StatusBadRequest, "", "the Idempotency-Key header must be 1 to %d printable characters (a UUID is a good key)", maxIdempotencyKey)
	}
	k := sha256.Sum256([]byte(c.name + "\x00" + key))
	b := sha256.New()
	b.Write([]byte(r.Method + " " + r.URL.Path + "\x00"))
	b.Write(body)
	return idempotency{key: hex.EncodeToString(k[:16]), reqHash: hex.EncodeToString(b.Sum(nil)[:16])}, nil
}

// replay answers with a remembered answer.
func replay(w http.ResponseWriter, a idemAnswer, location string) {
	w.Header().Set("Idempotent-Replayed", "true")
	if location != "" {
		w.Header().Set("Location", location)
	}
	writeRaw(w, a.status, a.body)
}

// reused is the 422 of an Idempotency-Key sent again with another body.
func reused() error {
	return errorf(http.StatusUnprocessableEntity, "", "this Idempotency-Key was used for another request (a different body or route): use a new key for new work")
}

// idemStart serialises the requests of key k in this Handler and answers
// from the remembered answer if there is one. done is false when the
// request was answered.
func (h *Handler) idemStart(w http.ResponseWriter, k idempotency, location func([]byte) string) (unlock func(), done bool, err error) {
	if k.key == "" {
		return func() {}, false, nil
	}
	unlock = h.idem.lock(k.key)
	if a, ok := h.idem.get(k.key); ok {
		unlock()
		if a.reqHash != k.reqHash {
			return nil, true, reused()
		}
		replay(w, a, location(a.body))
		return nil, true, nil
	}
	return unlock, false, nil
}

// answerCreated answers 201 with v and remembers the answer under k.
func (h *Handler) answerCreated(w http.ResponseWriter, k idempotency, loc string, v any, replayed bool) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encoding the answer failed", "")
		return
	}
	b = append(b, '\n')
	a := idemAnswer{reqHash: k.reqHash, status: http.StatusCreated, body: b}
	if k.key != "" {
		h.idem.put(k.key, a)
	}
	if replayed {
		replay(w, a, loc)
		return
	}
	w.Header().Set("Location", loc)
	writeRaw(w, http.StatusCreated, b)
}

func locationOf(body []byte) string {
	var v struct {
		URL string `json:"url"`
	}
	_ = json.Unmarshal(body, &v)
	return v.URL
}

func noLocation([]byte) string { return "" }

// serveEnqueue serves POST /v1/tasks.
func (h *Handler) serveEnqueue(w http.ResponseWriter, r *http.Request, c caller) {
	if err := h.enqueue(w, r, c); err != nil {
		h.failRequest(w, r, err)
	}
}

// failRequest answers an error of a request: an *apiError, or a store's
// (wrapped in a storeError).
func (h *Handler) failRequest(w http.ResponseWriter, r *http.Request, err error) {
	var se *storeError
	if errors.As(err, &se) {
		h.fail(w, r, se.st, se.doing, se.err)
		return
	}
	h.fail(w, r, h.order[0], "", err)
}

// storeError is an error of a store call.
type storeError struct {
	st    *store
	doing string
	err   error
}

func (e *storeError) Error() string { return e.doing + ": " + e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

func (h *Handler) enqueue(w http.ResponseWriter, r *http.Request, c caller) error {
	body, err := h.readBody(w, r)
	if err != nil {
		return err
	}
	o, err := parseBody(body, taskFields...)
	if err != nil {
		return err
	}
	tr, err := parseTask(o, time.Now(), false)
	if err != nil {
		return err
	}
	st, err := h.pickStore(tr.store, "store")
	if err != nil {
		return err
	}
	if st.enq == nil {
		return errorf(http.StatusNotImplemented, "store", "store %q (%s) cannot enqueue: it is not a peonify.Enqueuer", st.name, st.kind)
	}
	k, err := h.idempotency(r, c, body)
	if err != nil {
		return err
	}
	t := tr.task
	if k.key != "" && t.ID == "" {
		t.ID = k.id()
	}
	if t.ID == "" {
		t.ID = peonify.NewID()
	}
	k.stamp(t)
	if err := t.Validate(); err != nil {
		return err
	}
	unlock, done, err := h.idemStart(w, k, locationOf)
	if done || err != nil {
		return err
	}
	defer unlock()
	answer := Created{ID: t.ID, Store: st.name, URL: taskURL(st, t.ID)}

	ctx, cancel := h.storeCtx(context.WithoutCancel(r.Context()))
	defer cancel()
	err = st.enq.Enqueue(ctx, t)
	switch {
	case err == nil:
		h.answerCreated(w, k, answer.URL, answer, false)
		return nil
	case !errors.Is(err, peonify.ErrDuplicate):
		return &storeError{st, "enqueueing the task", err}
	case k.key == "":
		return errorf(http.StatusConflict, "id", "a task with ID %q (or with unique_key %q while it is live) is already stored; it was not stored again. Send an Idempotency-Key to make retries safe", t.ID, t.UniqueKey)
	}
	// A duplicate with an Idempotency-Key: a retry of this request, or a
	// reuse of the key, or another task with this ID or unique key.
	if st.insp != nil {
		info, gerr := st.insp.Get(ctx, t.ID)
		switch {
		case gerr == nil:
			switch k.match(&info.Task) {
			case 2:
				h.answerCreated(w, k, answer.URL, answer, true)
				return nil
			case 1:
				return reused()
			}
			return errorf(http.StatusConflict, "id", "a task with ID %q is already stored, by another request", t.ID)
		case !errors.Is(gerr, peonify.ErrNotFound) && !errors.Is(gerr, errors.ErrUnsupported):
			return &storeError{st, "reading the stored task", gerr}
		}
	}
	if t.UniqueKey != "" {
		return errorf(http.StatusConflict, "unique_key", "a live task with unique_key %q is already stored; this one was not stored", t.UniqueKey)
	}
	// The store holds (or recently held) the task with this key's ID, but
	// cannot show it: it ran and is gone. Its first answer was this one.
	h.answerCreated(w, k, answer.URL, answer, true)
	return nil
}

// serveBatch serves POST /v1/tasks/batch.
func (h *Handler) serveBatch(w http.ResponseWriter, r *http.Request, c caller) {
	if err := h.batch(w, r, c); err != nil {
		h.failRequest(w, r, err)
	}
}

// parseTasks reads the "tasks" array of a batch or workflow.
func parseTasks(o *object, inWorkflow bool) ([]*taskRequest, error) {
	var raws []json.RawMessage
	if !o.has("tasks") {
		return nil, errorf(http.StatusBadRequest, "tasks", "tasks is required: an array of tasks")
	}
	if err := o.get("tasks", &raws, "an array of task objects"); err != nil {
		return nil, err
	}
	switch {
	case len(raws) == 0:
		return nil, errorf(http.StatusUnprocessableEntity, "tasks", "tasks is empty: send at least one task")
	case len(raws) > MaxBatch:
		return nil, errorf(http.StatusUnprocessableEntity, "tasks", "tasks has %d tasks, more than %d: split it into several requests", len(raws), MaxBatch)
	}
	fields := taskFields
	if inWorkflow {
		fields = workflowTaskFields
	}
	now := time.Now()
	out := make([]*taskRequest, len(raws))
	for i, raw := range raws {
		to, err := parseObject(raw, fmt.Sprintf("tasks[%d]", i), fields...)
		if err != nil {
			return nil, err
		}
		if out[i], err = parseTask(to, now, inWorkflow); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// batchStore picks the one store of a batch: the body's "store", which
// every task's must match.
func (h *Handler) batchStore(o *object, trs []*taskRequest) (*store, error) {
	var name string
	if err := o.get("store", &name, "a string"); err != nil {
		return nil, err
	}
	field := "store"
	for _, tr := range trs {
		if tr.store == "" {
			continue
		}
		if name == "" {
			name, field = tr.store, tr.field+".store"
		} else if tr.store != name {
			return nil, errorf(http.StatusUnprocessableEntity, tr.field+".store", "%s.store is %q but the batch goes to %q: one request goes to one store", tr.field, tr.store, name)
		}
	}
	return h.pickStore(name, field)
}

// batchTasks reads the tasks of a batch or, inWorkflow, of a workflow,
// picks their store and refuses one that cannot take them; then it reads
// the request's idempotency key and gives every task an ID.
func (h *Handler) batchTasks(r *http.Request, c caller, body []byte, o *object, inWorkflow bool) ([]*taskRequest, *store, idempotency, error) {
	trs, err := parseTasks(o, inWorkflow)
	if err != nil {
		return nil, nil, idempotency{}, err
	}
	st, err := h.batchStore(o, trs)
	if err != nil {
		return nil, nil, idempotency{}, err
	}
	switch {
	case inWorkflow && st.workflow == nil:
		return nil, nil, idempotency{}, errorf(http.StatusNotImplemented, "store", "store %q (%s) does not run workflows: it is not a peonify.WorkflowStore", st.name, st.kind)
	case !inWorkflow && st.enq == nil:
		return nil, nil, idempotency{}, errorf(http.StatusNotImplemented, "store", "store %q (%s) cannot enqueue: it is not a peonify.Enqueuer", st.name, st.kind)
	}
	k, err := h.idempotency(r, c, body)
	if err != nil {
		return nil, nil, idempotency{}, err
	}
	if err := fillIDs(trs, k); err != nil {
		return nil, nil, idempotency{}, err
	}
	return trs, st, k, nil
}

// fillIDs gives every task an ID (derived from the key, with one) and
// refuses an ID given twice.
func fillIDs(trs []*taskRequest, k idempotency) error {
	seen := make(map[string]int, len(trs))
	for i, tr := range trs {
		t := tr.task
		if t.ID == "" {
			if k.key != "" {
				t.ID = fmt.Sprintf("%s-%d", k.id(), i)
			} else {
				t.ID = peonify.NewID()
			}
		}
		if j, dup := seen[t.ID]; dup {
			return errorf(http.StatusUnprocessableEntity, tr.field+".id", "%s.id %q is also the ID of tasks[%d]: IDs must be unique", tr.field, t.ID, j)
		}
		seen[t.ID] = i
		k.stamp(t)
	}
	return nil
}

func (h *Handler) batch(w http.ResponseWriter, r *http.Request, c caller) error {
	body, err := h.readBody(w, r)
	if err != nil {
		return err
	}
	o, err := parseBody(body, "tasks", "store")
	if err != nil {
		return err
	}
	trs, st, k, err := h.batchTasks(r, c, body, o, false)
	if err != nil {
		return err
	}
	tasks := make([]*peonify.Task, len(trs))
	answer := BatchCreated{Store: st.name, Tasks: make([]Created, len(trs))}
	for i, tr := range trs {
		if err := tr.task.Validate(); err != nil {
			return errorf(http.StatusUnprocessableEntity, tr.field, "%s: %v", tr.field, err)
		}
		tasks[i] = tr.task
		answer.Tasks[i] = Created{ID: tr.task.ID, Store: st.name, URL: taskURL(st, tr.task.ID)}
	}
	unlock, done, err := h.idemStart(w, k, noLocation)
	if done || err != nil {
		return err
	}
	defer unlock()
	ctx, cancel := h.storeCtx(context.WithoutCancel(r.Context()))
	defer cancel()
	if k.key != "" && st.insp != nil {
		// A retry after the first request's answer was lost finds its
		// first task; a reuse of the key for another batch is refused
		// before anything of it is stored.
		info, gerr := st.insp.Get(ctx, tasks[0].ID)
		switch {
		case gerr == nil:
			switch k.match(&info.Task) {
			case 2:
				h.answerCreated(w, k, "", answer, true)
				return nil
			case 1:
				return reused()
			}
		case !errors.Is(gerr, peonify.ErrNotFound) && !errors.Is(gerr, errors.ErrUnsupported):
			return &storeError{st, "reading the stored task", gerr}
		}
	}
	err = st.enq.Enqueue(ctx, tasks...)
	var de *peonify.DuplicateError
	switch {
	case err == nil:
	case errors.As(err, &de):
		dups := make(map[string]bool, len(de.IDs))
		for _, id := range de.IDs {
			dups[id] = true
		}
		for i := range answer.Tasks {
			answer.Tasks[i].Duplicate = dups[answer.Tasks[i].ID]
		}
	default:
		return &storeError{st, fmt.Sprintf("enqueueing %d tasks", len(tasks)), err}
	}
	h.answerCreated(w, k, "", answer, false)
	return nil
}

// serveEnqueueWorkflow serves POST /v1/workflows.
func (h *Handler) serveEnqueueWorkflow(w http.ResponseWriter, r *http.Request, c caller) {
	if err := h.enqueueWorkflow(w, r, c); err != nil {
		h.failRequest(w, r, err)
	}
}

func (h *Handler) enqueueWorkflow(w http.ResponseWriter, r *http.Request, c caller) error {
	body, err := h.readBody(w, r)
	if err != nil {
		return err
	}
	o, err := parseBody(body, "id", "tasks", "store")
	if err != nil {
		return err
	}
	wf := &peonify.Workflow{}
	if err := o.get("id", &wf.ID, "a string"); err != nil {
		return err
	}
	if len(wf.ID) > peonify.MaxIDLen || hasControl(wf.ID) || (o.has("id") && wf.ID == "") {
		return errorf(http.StatusUnprocessableEntity, "id", "id must be 1 to %d printable bytes, or left out", peonify.MaxIDLen)
	}
	trs, st, k, err := h.batchTasks(r, c, body, o, true)
	if err != nil {
		return err
	}
	if wf.ID == "" && k.key != "" {
		wf.ID = k.id()
	}
	index := make(map[string]string, len(trs))
	for _, tr := range trs {
		wf.Tasks = append(wf.Tasks, tr.task)
		index[tr.task.ID] = tr.field
	}
	if err := wf.Prepare(time.Now()); err != nil {
		var inv *peonify.InvalidTaskError
		if errors.As(err, &inv) {
			return errorf(http.StatusUnprocessableEntity, index[inv.ID], "%s", inv.Reason)
		}
		return err
	}
	answer := WorkflowCreated{ID: wf.ID, Store: st.name, URL: workflowURL(st, wf.ID), Tasks: make([]Created, len(trs))}
	for i, t := range wf.Tasks {
		answer.Tasks[i] = Created{ID: t.ID, Store: st.name, URL: taskURL(st, t.ID)}
	}
	unlock, done, err := h.idemStart(w, k, locationOf)
	if done || err != nil {
		return err
	}
	defer unlock()
	ctx, cancel := h.storeCtx(context.WithoutCancel(r.Context()))
	defer cancel()
	err = st.workflow.EnqueueWorkflow(ctx, wf)
	switch {
	case err == nil:
		h.answerCreated(w, k, answer.URL, answer, false)
		return nil
	case !errors.Is(err, peonify.ErrDuplicate):
		return &storeError{st, "enqueueing the workflow", err}
	case k.key == "":
		return errorf(http.StatusConflict, "id", "%v: nothing of this workflow was stored", err)
	}
	info, gerr := st.workflow.GetWorkflow(ctx, wf.ID)
	switch {
	case gerr == nil && len(info.Tasks) > 0:
		switch k.match(&info.Tasks[0].Task) {
		case 2:
			h.answerCreated(w, k, answer.URL, answer, true)
			return nil
		case 1:
			return reused()
		}
	case gerr != nil && !errors.Is(gerr, peonify.ErrNotFound):
		return &storeError{st, "reading the stored workflow", gerr}
	}
	return errorf(http.StatusConflict, "id", "%v: nothing of this workflow was stored", err)
}

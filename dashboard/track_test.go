package dashboard_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/dashboard"
	"github.com/peonify/peonify/streams/memstream"
)

// claim claims the next task of s, which must be id.
func claim(t *testing.T, s *memstream.Stream, id string) peonify.Delivery {
	t.Helper()
	ds, err := s.Poll(context.Background(), 1)
	if err != nil || len(ds) != 1 || ds[0].Task.ID != id {
		t.Fatalf("claiming %s: %v, %d deliveries", id, err, len(ds))
	}
	return ds[0]
}

// A done task shows its result in the task view (only there), a running
// one its progress in lists too, and both their workflow and parents.
func TestResultProgressAndWorkflowOfATask(t *testing.T) {
	f := newFixture(t, dashboard.Config{Auth: dashboard.Auth{Token: testToken}})
	ctx := context.Background()
	w := &peonify.Workflow{ID: "wf-1"}
	a := w.Add(&peonify.Task{ID: "a", Type: "fetch"})
	w.Add(&peonify.Task{ID: "b", Type: "resize"}, a)
	if err := f.mem.EnqueueWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	d := claim(t, f.mem, "a")
	if err := f.mem.SetProgress(ctx, d, peonify.Progress{Fraction: 0.42, Message: "downloading <b>", UpdatedAt: d.Deadline}); err != nil {
		t.Fatal(err)
	}
	res, body := f.do("GET", "/api/stores/mem/tasks?state=running", nil, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	var page dashboard.TaskPage
	decode(t, body, &page)
	if len(page.Tasks) != 1 || page.Tasks[0].Progress == nil || page.Tasks[0].Progress.Fraction != 0.42 ||
		page.Tasks[0].Progress.Message != "downloading <b>" || page.Tasks[0].Workflow != "wf-1" {
		t.Fatalf("running task in the list: %s", body)
	}

	d.Result = []byte(`{"bytes":1234}`)
	if err := f.mem.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}
	res, body = f.do("GET", "/api/stores/mem/tasks/a", nil, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	var tv dashboard.TaskView
	decode(t, body, &tv)
	if tv.State != peonify.StateDone || !tv.HasResult || tv.Result != `{"bytes":1234}` || tv.ResultSize != 14 || tv.Progress == nil {
		t.Errorf("done task: %s", body)
	}
	_, body = f.do("GET", "/api/stores/mem/tasks?state=done", nil, request{})
	page = dashboard.TaskPage{}
	decode(t, body, &page)
	if len(page.Tasks) != 1 || !page.Tasks[0].HasResult || page.Tasks[0].Result != "" {
		t.Errorf("lists say a task has a result without showing it: %s", body)
	}
	_, body = f.do("GET", "/api/stores/mem/tasks/b", nil, request{})
	tv = dashboard.TaskView{}
	decode(t, body, &tv)
	if tv.State != peonify.StatePending || len(tv.Parents) != 1 || tv.Parents[0] != "a" || tv.Workflow != "wf-1" {
		t.Errorf("released child: %s", body)
	}

	// A result is hidden with the payload of its type.
	h := newFixture(t, dashboard.Config{HidePayload: dashboard.HideTypes("fetch")})
	if err := h.mem.Enqueue(ctx, &peonify.Task{ID: "x", Type: "fetch"}); err != nil {
		t.Fatal(err)
	}
	d = claim(t, h.mem, "x")
	d.Result = []byte("secret")
	if err := h.mem.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}
	_, body = h.do("GET", "/api/stores/mem/tasks/x", nil, request{})
	tv = dashboard.TaskView{}
	decode(t, body, &tv)
	if !tv.HasResult || !tv.ResultHidden || tv.Result != "" || strings.Contains(string(body), "secret") {
		t.Errorf("hidden result: %s", body)
	}
}

// Cancel needs the same authentication and CSRF token as retry and
// delete, and cancels tasks that have not finished.
func TestCancelTasks(t *testing.T) {
	f := newFixture(t, dashboard.Config{Auth: dashboard.Auth{Token: testToken}})
	ctx := context.Background()
	if err := f.mem.Enqueue(ctx, &peonify.Task{ID: "p", Type: "x"}, &peonify.Task{ID: "q", Type: "x"}); err != nil {
		t.Fatal(err)
	}
	res, body := f.do("POST", "/api/stores/mem/cancel", dashboard.Selection{IDs: []string{"p"}}, request{})
	wantStatus(t, res, body, http.StatusForbidden, "csrf")
	res, body = f.do("POST", "/api/stores/mem/cancel", dashboard.Selection{IDs: []string{"p"}}, request{noAuth: true})
	wantStatus(t, res, body, http.StatusUnauthorized, "unauthorized")
	f.signIn(request{})
	res, body = f.do("POST", "/api/stores/mem/cancel", map[string]any{}, request{})
	wantStatus(t, res, body, http.StatusBadRequest, "bad_request")
	res, body = f.do("POST", "/api/stores/mem/cancel", dashboard.Selection{IDs: []string{"p", "gone"}}, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	var r dashboard.Result
	decode(t, body, &r)
	if r.Count != 1 {
		t.Errorf("cancelled %d, want 1", r.Count)
	}
	if c := counts(t, f.mem); c[peonify.StateCancelled] != 1 || c[peonify.StatePending] != 1 {
		t.Errorf("counts after cancel: %v", c)
	}
	var snap dashboard.Snapshot
	_, body = f.do("GET", "/api/stats", nil, request{})
	decode(t, body, &snap)
	if v := snap.Stores[0]; !v.Tracks || !v.Workflows || v.Counts[peonify.StateCancelled] != 1 {
		t.Errorf("store view %+v, want tracks, workflows and the cancelled count", v)
	}

	// Without auth the dashboard is read-only: no cancel.
	ro := newFixture(t, dashboard.Config{})
	res, body = ro.do("POST", "/api/stores/mem/cancel", dashboard.Selection{IDs: []string{"p"}}, request{})
	wantStatus(t, res, body, http.StatusForbidden, "read_only")
}

// A workflow view gives the state, the counts and the tasks with their
// parents; Cancel workflow cancels what has not finished.
func TestWorkflowViewAndCancel(t *testing.T) {
	f := newFixture(t, dashboard.Config{Auth: dashboard.Auth{Token: testToken}})
	ctx := context.Background()
	w := &peonify.Workflow{ID: "wf-2"}
	a := w.Add(&peonify.Task{ID: "a", Type: "fetch"})
	b := w.Add(&peonify.Task{ID: "b", Type: "resize"}, a)
	w.Add(&peonify.Task{ID: "c", Type: "report", AllowFailedParents: true}, a, b)
	if err := f.mem.EnqueueWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	d := claim(t, f.mem, "a")
	if err := f.mem.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}
	res, body := f.do("GET", "/api/stores/mem/workflows/wf-2", nil, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	var v dashboard.WorkflowView
	decode(t, body, &v)
	if v.ID != "wf-2" || v.State != peonify.WorkflowRunning || v.Total != 3 || v.Counts[peonify.StateDone] != 1 ||
		v.Counts[peonify.StatePending] != 1 || v.Counts[peonify.StateWaiting] != 1 || len(v.Tasks) != 3 ||
		v.Tasks[2].ID != "c" || len(v.Tasks[2].Parents) != 2 || !v.Tasks[2].AllowFailedParents || v.CreatedAt.IsZero() {
		t.Fatalf("workflow view: %s", body)
	}
	res, body = f.do("GET", "/api/stores/mem/workflows/nope", nil, request{})
	wantStatus(t, res, body, http.StatusNotFound, "not_found")

	f.signIn(request{})
	res, body = f.do("POST", "/api/stores/mem/workflows/wf-2/cancel", nil, request{})
	wantStatus(t, res, body, http.StatusOK, "")
	var r dashboard.Result
	decode(t, body, &r)
	if r.Count != 2 {
		t.Errorf("cancelled %d tasks of the workflow, want 2", r.Count)
	}
	_, body = f.do("GET", "/api/stores/mem/workflows/wf-2", nil, request{})
	decode(t, body, &v)
	if v.State != peonify.WorkflowCancelled || v.Counts[peonify.StateCancelled] != 2 {
		t.Errorf("after cancel: %s", body)
	}
	res, body = f.do("POST", "/api/stores/mem/workflows/nope/cancel", nil, request{})
	wantStatus(t, res, body, http.StatusNotFound, "not_found")
}

// A store that is not a Tracker or WorkflowStore answers 501.
func TestCancelAndWorkflowsUnsupportedAre501(t *testing.T) {
	f := newFixture(t, dashboard.Config{Auth: dashboard.Auth{Token: testToken}})
	plain := newFixture(t, dashboard.Config{Auth: dashboard.Auth{Token: testToken},
		Stores: []dashboard.Store{{Name: "mem", Inspector: inspectorOnly{f.mem}}}})
	plain.signIn(request{})
	res, body := plain.do("POST", "/api/stores/mem/cancel", dashboard.Selection{IDs: []string{"p"}}, request{})
	wantStatus(t, res, body, http.StatusNotImplemented, "unsupported")
	res, body = plain.do("GET", "/api/stores/mem/workflows/wf", nil, request{})
	wantStatus(t, res, body, http.StatusNotImplemented, "unsupported")
	res, body = plain.do("POST", "/api/stores/mem/workflows/wf/cancel", nil, request{})
	wantStatus(t, res, body, http.StatusNotImplemented, "unsupported")
}

// inspectorOnly hides every capability of a store but Inspector.
type inspectorOnly struct{ peonify.Inspector }

package dashboard

import (
	"cmp"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/peonify/peonify"
)

// Snapshot is what GET /api/stats returns and /events pushes: the
// processor's activity and the stores' counts at one moment. Counters are
// totals since the processor started; rates come from the difference
// between two snapshots.
type Snapshot struct {
	// At is when the snapshot was taken, in Unix milliseconds.
	At int64 `json:"at"`

	// Processor is the processor's activity; nil without
	// Config.Processor.
	Processor *ProcessorView `json:"processor,omitempty"`

	// Stores has one entry per Config.Stores, in order.
	Stores []StoreView `json:"stores"`
}

// ProcessorView is a processor's peonify.Stats, as JSON.
type ProcessorView struct {
	Polled    uint64 `json:"polled"`
	Started   uint64 `json:"started"`
	Succeeded uint64 `json:"succeeded"`
	Failed    uint64 `json:"failed"`
	Retried   uint64 `json:"retried"`
	Dead      uint64 `json:"dead"`
	Released  uint64 `json:"released"`
	Snoozed   uint64 `json:"snoozed"`
	LeaseLost uint64 `json:"leaseLost"`
	Cancelled uint64 `json:"cancelled"` // found cancelled before they started or while they ran
	AckErrors uint64 `json:"ackErrors"`

	Workers    int `json:"workers"`
	QueueDepth int `json:"queueDepth"`

	// InFlight lists the longest-running tasks, at most maxInFlight of
	// them; Running counts them all.
	InFlight []InFlightView `json:"inFlight"`
	Running  int            `json:"running"`

	Types   []TypeView   `json:"types"`
	Streams []StreamView `json:"streams"`
}

// InFlightView is one running task.
type InFlightView struct {
	ID        string  `json:"id"`
	Type      string  `json:"type"`
	Stream    string  `json:"stream"`
	Attempt   int     `json:"attempt"`
	Started   int64   `json:"started"` // Unix milliseconds
	RunningMs float64 `json:"runningMs"`
}

// TypeView summarises the runs of one task type. Type is empty for tasks
// of types with no handler. Percentiles are the upper bounds of the
// histogram buckets that hold them (see peonify.TypeStats.Quantile).
type TypeView struct {
	Type      string  `json:"type"`
	Succeeded uint64  `json:"succeeded"`
	Failed    uint64  `json:"failed"`
	AvgMs     float64 `json:"avgMs"`
	P50Ms     float64 `json:"p50Ms"`
	P99Ms     float64 `json:"p99Ms"`
}

// StreamView is one stream's polling.
type StreamView struct {
	Name       string `json:"name"`
	Weight     int    `json:"weight"`
	Polls      uint64 `json:"polls"`
	Polled     uint64 `json:"polled"`
	PollErrors uint64 `json:"pollErrors"`
	LastError  string `json:"lastError,omitempty"`
	BackingOff bool   `json:"backingOff"`
}

// StoreView is one store's counts and pause state.
type StoreView struct {
	Name string `json:"name"`

	// Counts has every state, zero when the store reported none.
	Counts map[peonify.State]int `json:"counts"`

	// Pausable is true when the store implements Pauser; Paused is then
	// its state.
	Pausable bool `json:"pausable"`
	Paused   bool `json:"paused"`

	// Tracks is true when the store keeps results and progress and can
	// cancel tasks (a peonify.Tracker); Workflows when it runs workflows
	// (a peonify.WorkflowStore).
	Tracks    bool `json:"tracks"`
	Workflows bool `json:"workflows"`

	// Limits are the flow-control limits the store enforces (see
	// Store.Limiter), in the order they were set; absent when it enforces
	// none.
	Limits []LimitView `json:"limits,omitempty"`

	// LimitsError is why the limits could not be read, if they could not.
	LimitsError string `json:"limitsError,omitempty"`

	// Error is why the store could not be read, if it could not.
	Error string `json:"error,omitempty"`
}

// LimitView is one flow-control limit of a store: its
// peonify.LimitStat.
type LimitView struct {
	Name string `json:"name"`
	// InUse counts the running tasks that count against the limit, and
	// Waiting the ready tasks it applies to that have not started.
	InUse   int `json:"inUse"`
	Waiting int `json:"waiting"`
	// Keys are the busiest keys of a per-key limit (at most
	// peonify.MaxLimitStatKeys), most tasks in use or waiting first.
	Keys []KeyView `json:"keys"`
}

// KeyView is one key's use of a per-key limit.
type KeyView struct {
	Key     string `json:"key"`
	InUse   int    `json:"inUse"`
	Waiting int    `json:"waiting"`
}

// maxInFlight bounds ProcessorView.InFlight, so that a processor with
// hundreds of workers does not make every snapshot large.
const maxInFlight = 50

// storeTimeout bounds the reading of one store for a snapshot.
const storeTimeout = 5 * time.Second

// snapshotJSON returns the current snapshot, encoded. A snapshot younger
// than half the Interval is shared, so that the stores are read at most
// about once per Interval however many pages are open; only one is built
// at a time.
func (d *Dashboard) snapshotJSON(ctx context.Context) ([]byte, error) {
	c := &d.snapshots
	fresh := func() []byte {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.json != nil && time.Since(c.at) < d.cfg.Interval/2 {
			return c.json
		}
		return nil
	}
	if b := fresh(); b != nil {
		return b, nil
	}
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-c.sem }()
	if b := fresh(); b != nil {
		return b, nil
	}
	c.mu.Lock()
	gen := c.gen
	c.mu.Unlock()
	s := d.snapshot(ctx)
	if err := ctx.Err(); err != nil {
		return nil, err // the store errors in s may only say that ctx ended
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.gen == gen { // else a change was made while it was built: do not keep it
		c.json, c.at = b, time.Now()
	}
	c.mu.Unlock()
	return b, nil
}

// snapshot reads the processor and the stores.
func (d *Dashboard) snapshot(ctx context.Context) Snapshot {
	s := Snapshot{Stores: make([]StoreView, 0, len(d.order))}
	if p := d.cfg.Processor; p != nil {
		s.Processor = processorView(p.Stats())
	}
	for _, st := range d.order {
		s.Stores = append(s.Stores, d.storeView(ctx, st))
	}
	s.At = time.Now().UnixMilli()
	return s
}

func (d *Dashboard) storeView(ctx context.Context, st *store) StoreView {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	v := StoreView{Name: st.name, Counts: make(map[peonify.State]int, len(peonify.States)), Pausable: st.pauser != nil,
		Tracks: st.tracker != nil, Workflows: st.workflows != nil}
	for _, state := range peonify.States {
		v.Counts[state] = 0
	}
	counts, err := st.insp.Counts(ctx)
	if err != nil {
		v.Error = err.Error()
		return v
	}
	for state, n := range counts {
		v.Counts[state] = n
	}
	if st.pauser != nil {
		if v.Paused, err = st.pauser.Paused(ctx); err != nil {
			v.Error = err.Error()
		}
	}
	if st.lim != nil {
		stats, err := st.lim.LimitStats(ctx)
		if err != nil {
			v.LimitsError = err.Error()
		}
		for _, ls := range stats {
			lv := LimitView{Name: ls.Name, InUse: ls.InUse, Waiting: ls.Waiting, Keys: make([]KeyView, 0, len(ls.Keys))}
			for _, k := range ls.Keys[:min(len(ls.Keys), peonify.MaxLimitStatKeys)] {
				lv.Keys = append(lv.Keys, KeyView{Key: k.Key, InUse: k.InUse, Waiting: k.Waiting})
			}
			v.Limits = append(v.Limits, lv)
		}
	}
	return v
}

func processorView(st peonify.Stats) *ProcessorView {
	v := &ProcessorView{
		Polled: st.Polled, Started: st.Started, Succeeded: st.Succeeded, Failed: st.Failed,
		Retried: st.Retried, Dead: st.Dead, Released: st.Released, Snoozed: st.Snoozed,
		LeaseLost: st.LeaseLost, Cancelled: st.Cancelled, AckErrors: st.AckErrors,
		Workers: st.Workers, QueueDepth: st.QueueDepth,
		Running:  len(st.InFlight),
		InFlight: make([]InFlightView, 0, min(len(st.InFlight), maxInFlight)),
		Types:    make([]TypeView, 0, len(st.Types)),
		Streams:  make([]StreamView, 0, len(st.Streams)),
	}
	for _, f := range st.InFlight[:min(len(st.InFlight), maxInFlight)] {
		v.InFlight = append(v.InFlight, InFlightView{ID: f.ID, Type: f.Type, Stream: f.Stream, Attempt: f.Attempt,
			Started: f.Started.UnixMilli(), RunningMs: ms(f.Running)})
	}
	for typ, ts := range st.Types {
		tv := TypeView{Type: typ, Succeeded: ts.Succeeded, Failed: ts.Failed,
			P50Ms: ms(ts.Quantile(0.5)), P99Ms: ms(ts.Quantile(0.99))}
		if n := ts.Succeeded + ts.Failed; n > 0 {
			tv.AvgMs = ms(ts.Total / time.Duration(n))
		}
		v.Types = append(v.Types, tv)
	}
	slices.SortFunc(v.Types, func(a, b TypeView) int { return cmp.Compare(a.Type, b.Type) })
	for _, ss := range st.Streams {
		v.Streams = append(v.Streams, StreamView{Name: ss.Name, Weight: ss.Weight, Polls: ss.Polls, Polled: ss.Polled,
			PollErrors: ss.PollErrors, LastError: ss.LastError, BackingOff: ss.BackingOff})
	}
	return v
}

// ms returns d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (d *Dashboard) serveStats(w http.ResponseWriter, r *http.Request) {
	b, err := d.snapshotJSON(r.Context())
	if err != nil {
		return // the client went away
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(b)
}

// serveEvents streams a snapshot every Interval as server-sent events
// ("event: snapshot"), until the client goes away or the server's base
// context ends.
func (d *Dashboard) serveEvents(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no") // tell proxies such as nginx not to buffer
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	ctx := r.Context()
	tick := time.NewTicker(d.cfg.Interval)
	defer tick.Stop()
	prefix := []byte("retry: 2000\n")
	for {
		b, err := d.snapshotJSON(ctx)
		if err != nil {
			return
		}
		// A client that stops reading must not hold this goroutine: each
		// write has a deadline (ignored where unsupported).
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		msg := make([]byte, 0, len(prefix)+len(b)+32)
		msg = append(msg, prefix...)
		msg = append(msg, "event: snapshot\ndata: "...)
		msg = append(msg, b...)
		msg = append(msg, "\n\n"...)
		prefix = nil
		if _, err := w.Write(msg); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// writeJSON writes v as JSON. encoding/json escapes <, > and & in
// strings, so task data cannot be read as HTML even by a careless client.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "encoding the answer: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// APIError is the body of every error answer of the API.
type APIError struct {
	// Code is a stable machine-readable reason: unauthorized, read_only,
	// cross_origin, csrf, not_found, bad_request, unsupported or
	// store_error.
	Code string `json:"code"`
	// Message says what went wrong and what to do.
	Message string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	b, _ := json.Marshal(APIError{Code: code, Message: msg})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

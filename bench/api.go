package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/httpapi"
)

// The api mode (-modes api) measures what enqueueing through the HTTP API
// (package httpapi) costs against the Go Enqueue: -api-tasks tasks (20,000)
// enqueued on a fresh store by -api-clients (16) concurrent clients, in
// four variants, interleaved -count times:
//
//   - go-enqueue: the stream's Enqueue, one task per call;
//   - api: POST /v1/tasks, one task per request;
//   - go-enqueue-batch: the stream's Enqueue, -api-batch (100) tasks per call;
//   - api-batch: POST /v1/tasks/batch, -api-batch tasks per request.
//
// The handler runs in this process behind a real loopback listener
// (net.Listen and http.Server), reached by an http.Client whose transport
// keeps one connection per client alive; every request carries a bearer
// token with the enqueue scope. The processor does not run while the
// tasks are enqueued: the time runs from the first call to the return of
// the last. Afterwards the processor drains the store, untimed, so that
// every task enqueued, through the API or not, is checked to run once with
// its payload.

// Report names of the api mode.
const (
	apiMode        = "api"
	apiSingle      = "api"              // POST /v1/tasks
	apiBatch       = "api-batch"        // POST /v1/tasks/batch
	goEnqueue      = "go-enqueue"       // Enqueue, one task per call
	goEnqueueBatch = "go-enqueue-batch" // Enqueue, -api-batch tasks per call
)

// Goals of the api mode.
const (
	apiGoal      = 0.5 // api against go-enqueue
	apiBatchGoal = 0.9 // api-batch against go-enqueue-batch: "close to 1"
)

// apiOptions are the flags of the api mode.
type apiOptions struct {
	apiTasks   int // tasks of each variant
	apiClients int // concurrent clients
	apiBatch   int // tasks per batch request and per batch Enqueue
}

// streamSystem is a Peonify system whose stream the api mode enqueues on.
type streamSystem interface {
	system
	peonifyStream() peonify.Stream
}

// runAPI runs the api mode: count interleaved runs of the four variants,
// each on a fresh store of a contender that mk makes.
func runAPI(ctx context.Context, rep *report, r *runner, cfg peonifyConfig, mk func(peonifyConfig) contender,
	ao apiOptions, count int) error {
	variants := []string{goEnqueue, apiSingle, goEnqueueBatch, apiBatch}
	var runs []func() (result, error)
	for _, v := range variants {
		runs = append(runs, func() (result, error) { return r.apiEnqueue(ctx, mk(cfg), v, ao) })
	}
	return rep.add(repeat(count, runs...))
}

// apiConfig describes a variant of the api mode for the report.
func apiConfig(variant string, ao apiOptions) string {
	s := fmt.Sprintf("%d tasks into an idle store, ", ao.apiTasks)
	switch variant {
	case goEnqueue:
		return s + fmt.Sprintf("%d goroutines, Enqueue of one task per call", ao.apiClients)
	case goEnqueueBatch:
		return s + fmt.Sprintf("%d goroutines, Enqueue of %d tasks per call", ao.apiClients, ao.apiBatch)
	case apiSingle:
		return s + fmt.Sprintf("%d HTTP clients (keep-alive, loopback, bearer token), POST /v1/tasks, one task per request", ao.apiClients)
	}
	return s + fmt.Sprintf("%d HTTP clients (keep-alive, loopback, bearer token), POST /v1/tasks/batch, %d tasks per request",
		ao.apiClients, ao.apiBatch)
}

// apiEnqueue enqueues ao.apiTasks tasks on a fresh store of c as variant
// says, and measures it; then it drains the store to check every task.
// The result's latencies are those of the calls or requests.
func (r *runner) apiEnqueue(ctx context.Context, c contender, variant string, ao apiOptions) (result, error) {
	n := ao.apiTasks
	c.name = variant
	c.config = apiConfig(variant, ao)
	res := result{mode: apiMode, system: variant, config: c.config, n: n, hasLatency: true}
	sys, rec, err := r.setup(ctx, c, n)
	if err != nil {
		return res, err
	}
	defer sys.Close()
	ss, ok := sys.(streamSystem)
	if !ok {
		return res, fmt.Errorf("%s: not a Peonify system", c.name)
	}
	st := ss.peonifyStream()
	enq, ok := peonify.As[peonify.Enqueuer](st)
	if !ok {
		return res, fmt.Errorf("%s: the %s stream is not a peonify.Enqueuer", c.name, r.env.backend)
	}

	per := 1
	if variant == goEnqueueBatch || variant == apiBatch {
		per = ao.apiBatch
	}
	var call func(ctx context.Context, first, count int) error
	var srv *apiServer
	switch variant {
	case goEnqueue, goEnqueueBatch:
		call = func(ctx context.Context, first, count int) error {
			tasks := make([]*peonify.Task, count)
			for i := range tasks {
				tasks[i] = &peonify.Task{Type: "bench", Payload: payload(first + i)}
			}
			return enq.Enqueue(ctx, tasks...)
		}
	default:
		if srv, err = startAPIServer(st, ao.apiClients, r); err != nil {
			return res, fmt.Errorf("%s: %w", c.name, err)
		}
		defer srv.close()
		if variant == apiSingle {
			call = srv.enqueueOne
		} else {
			call = srv.enqueueBatch
		}
	}

	ph, err := r.startPhase(ctx, apiMode, c.name, sys, rec)
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	lat, err := callConcurrently(ctx, ao.apiClients, n, per, call)
	res.elapsed = time.Since(t0)
	end := takeSample(ctx, sys)
	ph.stopProfile()
	if err != nil {
		return res, fmt.Errorf("%s: %w", c.name, err)
	}
	res.cpu = end.cpu - ph.begin.cpu
	res.dbCPU, res.hasDBCPU = serverCPUBetween(ph.begin.db, end.db)
	res.p50, res.p99 = percentile(lat, 0.50), percentile(lat, 0.99)
	if srv != nil {
		res.detail = srv.detail()
		if conns := srv.conns.Load(); conns > int64(ao.apiClients) {
			return res, fmt.Errorf("%s: the requests came over %d connections for %d clients: keep-alive failed", c.name, conns, ao.apiClients)
		}
	}
	if err := checkPending(ctx, st, n); err != nil {
		return res, fmt.Errorf("%s: %w", c.name, err)
	}

	// Untimed: every task must run once, with the payload it was given.
	rec.inserted(0, n, rec.now())
	if err := sys.Start(ctx); err != nil {
		return res, fmt.Errorf("%s: start: %w", c.name, err)
	}
	if _, err := r.finish(ctx, c, sys, rec); err != nil {
		return res, err
	}
	return res, nil
}

// callConcurrently has clients goroutines call call for tasks 0..n-1, per
// tasks at a time, until all are done or one fails, and returns the
// sorted durations of the calls.
func callConcurrently(ctx context.Context, clients, n, per int, call func(ctx context.Context, first, count int) error) ([]time.Duration, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	lats := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	for w := range clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				first := int(next.Add(int64(per))) - per
				if first >= n {
					return
				}
				count := min(per, n-first)
				t0 := time.Now()
				if err := call(ctx, first, count); err != nil {
					cancel(fmt.Errorf("tasks %d to %d: %w", first, first+count-1, err))
					return
				}
				lats[w] = append(lats[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	all := slices.Concat(lats...)
	slices.Sort(all)
	return all, nil
}

// checkPending checks with the stream's Inspector, where it has one, that
// it holds n pending tasks and nothing else.
func checkPending(ctx context.Context, st peonify.Stream, n int) error {
	in, ok := peonify.As[peonify.Inspector](st)
	if !ok {
		return nil
	}
	counts, err := in.Counts(ctx)
	if err != nil {
		return fmt.Errorf("counts after the enqueue: %w", err)
	}
	total := 0
	for _, c := range counts {
		total += c
	}
	if counts[peonify.StatePending] != n || total != n {
		return fmt.Errorf("after enqueueing %d tasks the store holds %v, want %d pending", n, counts, n)
	}
	return nil
}

// apiServer is the httpapi handler on a loopback listener, and the HTTP
// client that enqueues through it.
type apiServer struct {
	url    string
	auth   string // the Authorization header
	server *http.Server
	client *http.Client
	served chan error

	conns    atomic.Int64 // connections that carried at least one request
	used     sync.Map     // net.Conn → true, once it carried a request
	dials    atomic.Int64 // connections the client dialed
	requests atomic.Int64
}

// startAPIServer serves an httpapi.Handler over st on a new loopback
// listener, with a token of the enqueue scope, and makes a client that
// keeps up to clients connections alive.
func startAPIServer(st peonify.Stream, clients int, r *runner) (*apiServer, error) {
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	token := httpapi.Token{Name: "bench", Secret: hex.EncodeToString(secret), Scopes: []httpapi.Scope{httpapi.ScopeEnqueue}}
	h, err := httpapi.New(httpapi.Config{
		Stores: []httpapi.Store{{Name: "bench", Stream: st}},
		Tokens: []httpapi.Token{token},
		Logger: r.env.log,
	})
	if err != nil {
		return nil, fmt.Errorf("httpapi.New: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen on loopback: %w", err)
	}
	s := &apiServer{
		url:    "http://" + ln.Addr().String(),
		auth:   "Bearer " + token.Secret,
		served: make(chan error, 1),
	}
	// The keep-alive check counts the connections that carried a request,
	// not the dials: the transport may dial one for a request that then
	// gets a connection freed meanwhile, and keep it idle, unused, which
	// the server closes after ReadHeaderTimeout. -v shows both.
	s.server = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(c net.Conn, state http.ConnState) {
			if state != http.StateActive {
				return
			}
			if _, seen := s.used.LoadOrStore(c, true); !seen {
				s.conns.Add(1)
			}
		}}
	dialer := &net.Dialer{}
	s.client = &http.Client{
		Timeout: r.timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				s.dials.Add(1)
				return dialer.DialContext(ctx, network, addr)
			},
			MaxIdleConns:        clients,
			MaxIdleConnsPerHost: clients, // the default, 2, would close and reopen connections
			MaxConnsPerHost:     clients,
			DisableCompression:  true,
		},
	}
	go func() { s.served <- s.server.Serve(ln) }()
	return s, nil
}

// close stops the client and the server.
func (s *apiServer) close() {
	s.client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.server.Shutdown(ctx)
	<-s.served
}

// detail says how the client used the server, for -v.
func (s *apiServer) detail() string {
	return fmt.Sprintf("%d requests over %d connections (%d dialed)", s.requests.Load(), s.conns.Load(), s.dials.Load())
}

// appendTaskJSON appends the API's JSON of the bench task seq, built
// without reflection so that the client's cost stays small.
func appendTaskJSON(b []byte, seq int) []byte {
	b = append(b, `{"type":"bench","payload":`...)
	b = append(b, payload(seq)...)
	return append(b, '}')
}

// post sends body to path and checks that the answer is 201 Created. It
// reads the whole answer, so that the connection is reused, and returns
// it.
func (s *apiServer) post(ctx context.Context, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", s.auth)
	req.Header.Set("Content-Type", "application/json")
	s.requests.Add(1)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("POST %s: reading the answer: %w", path, err)
	}
	if resp.StatusCode != http.StatusCreated {
		return nil, fmt.Errorf("POST %s: %s: %s", path, resp.Status, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// enqueueOne enqueues task first with POST /v1/tasks; count is 1.
func (s *apiServer) enqueueOne(ctx context.Context, first, count int) error {
	if count != 1 {
		return fmt.Errorf("POST /v1/tasks takes one task, not %d", count)
	}
	out, err := s.post(ctx, "/v1/tasks", appendTaskJSON(make([]byte, 0, 64), first))
	if err != nil {
		return err
	}
	if !bytes.Contains(out, []byte(`"id"`)) {
		return fmt.Errorf("POST /v1/tasks: the answer has no id: %s", out)
	}
	return nil
}

// enqueueBatch enqueues tasks first..first+count-1 with one POST
// /v1/tasks/batch, and checks that the answer lists count tasks.
func (s *apiServer) enqueueBatch(ctx context.Context, first, count int) error {
	b := make([]byte, 0, 16+48*count)
	b = append(b, `{"tasks":[`...)
	for i := range count {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendTaskJSON(b, first+i)
	}
	b = append(b, "]}"...)
	out, err := s.post(ctx, "/v1/tasks/batch", b)
	if err != nil {
		return err
	}
	var ans struct {
		Tasks []struct {
			ID string `json:"id"`
		} `json:"tasks"`
	}
	if err := json.Unmarshal(out, &ans); err != nil {
		return fmt.Errorf("POST /v1/tasks/batch: the answer is not JSON: %w", err)
	}
	if len(ans.Tasks) != count {
		return fmt.Errorf("POST /v1/tasks/batch: the answer lists %d tasks for %d enqueued", len(ans.Tasks), count)
	}
	return nil
}

// apiGoals checks the api mode's goals, if it ran, with check.
func (r *report) apiGoals(check func(name string, ok bool, got string)) {
	if ratio, ok := r.ratio(apiMode, apiSingle, goEnqueue); ok {
		check(fmt.Sprintf("api/go-enqueue >= %g", apiGoal), ratio >= apiGoal, fmt.Sprintf("%.2f", ratio))
	}
	if ratio, ok := r.ratio(apiMode, apiBatch, goEnqueueBatch); ok {
		check(fmt.Sprintf("api-batch/go-enqueue-batch >= %g", apiBatchGoal), ratio >= apiBatchGoal, fmt.Sprintf("%.2f", ratio))
	}
	if ratio, ok := r.ratio(apiMode, apiBatch, goEnqueue); ok {
		fmt.Fprintf(r.w, "  %-40s %-7s %.2f\n", "api-batch/go-enqueue", "info", ratio)
	}
}

// ratio returns the rate of system a over that of system b in mode, if
// both ran.
func (r *report) ratio(mode, a, b string) (float64, bool) {
	ra, ok1 := r.get(mode, a)
	rb, ok2 := r.get(mode, b)
	if !ok1 || !ok2 || rb.jobsPerSec() <= 0 {
		return 0, false
	}
	return ra.jobsPerSec() / rb.jobsPerSec(), true
}

// apiResult prints the api mode's RESULT lines, if it ran, the batch
// endpoint's first:
//
//	RESULT backend=<b> mode=api-batch peonify=<tasks/s> peer=go-enqueue-batch:<tasks/s> ratio=<api-batch/go-enqueue-batch>
//	RESULT backend=<b> mode=api peonify=<tasks/s> peer=go-enqueue:<tasks/s> ratio=<api/go-enqueue>
func (r *report) apiResult(backend string) {
	for _, p := range [][2]string{{apiBatch, goEnqueueBatch}, {apiSingle, goEnqueue}} {
		a, ok1 := r.get(apiMode, p[0])
		b, ok2 := r.get(apiMode, p[1])
		if !ok1 || !ok2 {
			continue
		}
		line := resultLine(backend, p[1], a.jobsPerSec(), b.jobsPerSec())
		fmt.Fprintln(r.w, strings.Replace(line, "RESULT backend="+backend, "RESULT backend="+backend+" mode="+p[0], 1))
	}
}

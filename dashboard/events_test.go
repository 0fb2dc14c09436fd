package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/dashboard"
	"github.com/peonify/peonify/streams/memstream"
)

// readSnapshot reads the next "snapshot" server-sent event from r.
func readSnapshot(t *testing.T, r *bufio.Reader) dashboard.Snapshot {
	t.Helper()
	var event, data string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the event stream: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if event == "snapshot" && data != "" {
				var s dashboard.Snapshot
				if err := json.Unmarshal([]byte(data), &s); err != nil {
					t.Fatalf("snapshot %q: %v", data, err)
				}
				return s
			}
			event, data = "", ""
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		}
	}
}

func TestEventsStreamSnapshotsUntilTheClientLeaves(t *testing.T) {
	mem := memstream.New(memstream.Config{Name: "mem"})
	p, err := peonify.New(peonify.Config{Workers: 2, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddTaskList(peonify.TaskList{"noop": peonify.HandlerFunc(func(context.Context, *peonify.Task) error { return nil })}); err != nil {
		t.Fatal(err)
	}
	if err := p.AddStream(mem); err != nil {
		t.Fatal(err)
	}
	d, err := dashboard.New(dashboard.Config{
		Processor: p,
		Stores:    []dashboard.Store{{Name: "mem", Inspector: mem}},
		Auth:      dashboard.Auth{Token: testToken},
		Interval:  50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.ServeHTTP(w, r)
		if r.URL.Path == "/events" {
			close(ended)
		}
	}))
	defer srv.Close()
	runProcessor(t, p)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); res.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("GET /events: %s, Content-Type %q", res.Status, ct)
	}
	r := bufio.NewReader(res.Body)
	first := readSnapshot(t, r)
	if first.Processor == nil || first.Processor.Workers != 2 || len(first.Stores) != 1 || first.Stores[0].Name != "mem" {
		t.Fatalf("first snapshot: %+v", first)
	}

	for range 3 {
		if err := mem.Enqueue(ctx, &peonify.Task{Type: "noop"}); err != nil {
			t.Fatal(err)
		}
	}
	last := first
	for n := 0; last.Processor.Succeeded < 3; n++ {
		s := readSnapshot(t, r)
		if s.At < last.At {
			t.Fatalf("snapshot at %d after one at %d", s.At, last.At)
		}
		last = s
	}
	if tv := last.Processor.Types; len(tv) != 1 || tv[0].Type != "noop" || tv[0].Succeeded != 3 || tv[0].P99Ms <= 0 {
		t.Fatalf("type stats: %+v", tv)
	}
	if ss := last.Processor.Streams; len(ss) != 1 || ss[0].Name != "mem" || ss[0].Polled != 3 {
		t.Fatalf("stream stats: %+v", ss)
	}

	cancel() // the client leaves
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the /events handler did not return after the client left")
	}
}

func TestServeEndsEventStreamsAtShutdown(t *testing.T) {
	mem := memstream.New(memstream.Config{})
	defer mem.Close(context.Background())
	d, err := dashboard.New(dashboard.Config{Stores: []dashboard.Store{{Name: "mem", Inspector: mem}}, Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := d.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx, ln) }()

	u := d.URL(ln.Addr())
	if !strings.HasPrefix(u, "http://127.0.0.1:") {
		t.Fatalf("URL = %q", u)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	req, _ := http.NewRequestWithContext(rctx, "GET", u+"events", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	readSnapshot(t, bufio.NewReader(res.Body))

	start := time.Now()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Serve took %s to shut down: the open event stream held it", took)
	}
	if _, err := io.ReadAll(res.Body); err != nil && rctx.Err() != nil {
		t.Fatalf("the event stream did not end: %v", err)
	}
}

func TestListenRefusesAnOpenDashboardOnOtherInterfaces(t *testing.T) {
	mem := memstream.New(memstream.Config{})
	defer mem.Close(context.Background())
	d, err := dashboard.New(dashboard.Config{Stores: []dashboard.Store{{Name: "mem", Inspector: mem}}})
	if err != nil {
		t.Fatal(err)
	}
	if ln, err := d.Listen(":0"); err == nil || !strings.Contains(err.Error(), "refusing to serve without authentication") {
		if ln != nil {
			ln.Close()
		}
		t.Fatalf("Listen(:0) without auth: %v, want a refusal", err)
	}
	if err := d.ListenAndServe(context.Background(), "0.0.0.0:0"); err == nil {
		t.Fatal("ListenAndServe(0.0.0.0:0) without auth: want a refusal")
	}
}

func TestCheckAddr(t *testing.T) {
	open := dashboard.Config{}
	withToken := dashboard.Config{Auth: dashboard.Auth{Token: testToken}}
	withBasic := dashboard.Config{Auth: dashboard.Auth{Username: "ada", Password: "pw"}}
	for _, tc := range []struct {
		addr string
		cfg  dashboard.Config
		ok   bool
	}{
		{"127.0.0.1:8080", open, true},
		{"127.0.0.2:8080", open, true},
		{"[::1]:8080", open, true},
		{"localhost:8080", open, true},
		{":8080", open, false},
		{"0.0.0.0:8080", open, false},
		{"[::]:8080", open, false},
		{"192.168.1.10:8080", open, false},
		{"dashboard.example:80", open, false},
		{"127.0.0.1", open, false}, // no port
		{":8080", withToken, true},
		{"0.0.0.0:8080", withBasic, true},
		{"127.0.0.1:8080", dashboard.Config{Auth: dashboard.Auth{Token: "short"}}, false},
	} {
		err := dashboard.CheckAddr(tc.addr, tc.cfg)
		if (err == nil) != tc.ok {
			t.Errorf("CheckAddr(%q, auth %v): %v, want ok %v", tc.addr, tc.cfg.Auth != (dashboard.Auth{}), err, tc.ok)
		}
	}
}

func TestURL(t *testing.T) {
	mem := memstream.New(memstream.Config{})
	defer mem.Close(context.Background())
	d, err := dashboard.New(dashboard.Config{Stores: []dashboard.Store{{Name: "mem", Inspector: mem}},
		Auth: dashboard.Auth{Token: "a+b/c=d 0123456789"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ addr, want string }{
		{"0.0.0.0:8080", "http://localhost:8080/"},
		{"[::]:8080", "http://localhost:8080/"},
		{"127.0.0.1:9", "http://127.0.0.1:9/"},
		{"[::1]:9", "http://[::1]:9/"},
	} {
		ap, err := netipAddrPort(tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := d.URL(ap); got != tc.want {
			t.Errorf("URL(%s) = %q, want %q", tc.addr, got, tc.want)
		}
	}
	ap, _ := netipAddrPort("127.0.0.1:9")
	if got, want := d.TokenURL(ap), "http://127.0.0.1:9/#token=a%2Bb%2Fc%3Dd+0123456789"; got != want {
		t.Errorf("TokenURL = %q, want %q", got, want)
	}
}

func TestMountedUnderAPrefix(t *testing.T) {
	mem := memstream.New(memstream.Config{})
	defer mem.Close(context.Background())
	d, err := dashboard.New(dashboard.Config{Stores: []dashboard.Store{{Name: "mem", Inspector: mem}}})
	if err != nil {
		t.Fatal(err)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(srv *httptest.Server, path string) (*http.Response, string) {
		t.Helper()
		res, err := noRedirect.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}

	// StripPrefix without the slash, as a whole server's handler.
	srv := httptest.NewServer(http.StripPrefix("/admin/tasks", d))
	defer srv.Close()
	for path, want := range map[string]string{"/admin/tasks": "./tasks/", "/admin/tasks?x=1": "./tasks/?x=1"} {
		res, _ := get(srv, path)
		if res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != want {
			t.Errorf("GET %s: %s, Location %q, want a redirect to %q", path, res.Status, res.Header.Get("Location"), want)
		}
	}
	res, page := get(srv, "/admin/tasks/")
	if res.StatusCode != http.StatusOK || !strings.Contains(page, `src="assets/app.js"`) {
		t.Fatalf("GET /admin/tasks/: %s", res.Status)
	}
	// Every URL in the page and the script is relative.
	_, script := get(srv, "/admin/tasks/assets/app.js")
	for _, abs := range []string{`="/`, `'/api`, `'/events`, `"/api`, `http:`, `https:`} {
		if strings.Contains(page, abs) || strings.Contains(script, abs) {
			t.Errorf("the page or script holds an absolute URL (%s)", abs)
		}
	}
	for _, path := range []string{"/admin/tasks/api/stats", "/admin/tasks/assets/style.css", "/admin/tasks/api/stores/mem/tasks?state=dead"} {
		if res, body := get(srv, path); res.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s: %s", path, res.Status, body)
		}
	}

	// Behind a ServeMux, with the slash in the prefix.
	mux := http.NewServeMux()
	mux.Handle("/ops/", http.StripPrefix("/ops/", d))
	srv2 := httptest.NewServer(mux)
	defer srv2.Close()
	if res, page := get(srv2, "/ops/"); res.StatusCode != http.StatusOK || !strings.Contains(page, "<title>Peonify</title>") {
		t.Errorf("GET /ops/: %s", res.Status)
	}
	if res, _ := get(srv2, "/ops/api/stats"); res.StatusCode != http.StatusOK {
		t.Errorf("GET /ops/api/stats: %s", res.Status)
	}
	if res, _ := get(srv2, "/ops/assets/index.html"); res.StatusCode != http.StatusNotFound {
		t.Errorf("GET /ops/assets/index.html: %s, want 404", res.Status)
	}
}

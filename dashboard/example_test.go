package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/dashboard"
	"github.com/peonify/peonify/streams/memstream"
)

// A dashboard over a store that holds a dead task. The page at its root
// shows it; here a script reads it through the JSON API.
func Example() {
	ctx := context.Background()
	store := memstream.New(memstream.Config{})
	defer store.Close(ctx)
	deadLetterForExample(store, &peonify.Task{ID: "welcome-ada", Type: "email", Payload: []byte(`{"to":"ada@example.com"}`)},
		"smtp: mailbox full")

	dash, err := dashboard.New(dashboard.Config{
		Stores: []dashboard.Store{{Name: "emails", Inspector: store}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := httptest.NewServer(dash)
	defer srv.Close()

	res, err := http.Get(srv.URL + "/api/stores/emails/tasks?state=dead")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer res.Body.Close()
	var page dashboard.TaskPage
	if err := json.NewDecoder(res.Body).Decode(&page); err != nil {
		fmt.Println(err)
		return
	}
	for _, t := range page.Tasks {
		fmt.Printf("%s (%s): %s; payload %s\n", t.ID, t.Type, t.LastError, t.Payload)
	}
	// Output:
	// welcome-ada (email): smtp: mailbox full; payload {"to":"ada@example.com"}
}

// A script retries dead tasks as the page does: it gets a CSRF token from
// api/session, then sends it back in a header along with the cookie.
func Example_retry() {
	ctx := context.Background()
	store := memstream.New(memstream.Config{})
	defer store.Close(ctx)
	deadLetterForExample(store, &peonify.Task{ID: "charge-42", Type: "charge"}, "card declined")

	const token = "0123456789abcdef0123456789abcdef" // dashboard.NewToken() in real use
	dash, err := dashboard.New(dashboard.Config{
		Stores: []dashboard.Store{{Name: "payments", Inspector: store}},
		Auth:   dashboard.Auth{Token: token},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := httptest.NewServer(dash)
	defer srv.Close()

	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	call := func(method, path, body string, csrf string, out any) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		if csrf != "" {
			req.Header.Set("X-CSRF-Token", csrf)
		}
		res, err := client.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer res.Body.Close()
		fmt.Println(method, path, res.Status)
		_ = json.NewDecoder(res.Body).Decode(out)
	}

	var s dashboard.Session
	call("GET", "/api/session", "", "", &s)
	var r dashboard.Result
	call("POST", "/api/stores/payments/retry", `{"ids": ["charge-42"]}`, s.CSRF, &r)
	fmt.Println("retried:", r.Count)

	ti, _ := store.Get(ctx, "charge-42")
	fmt.Println("now:", ti.State)
	// Output:
	// GET /api/session 200 OK
	// POST /api/stores/payments/retry 200 OK
	// retried: 1
	// now: pending
}

// CheckAddr refuses a dashboard without authentication on an address that
// other machines can reach.
func ExampleCheckAddr() {
	open := dashboard.Config{}
	fmt.Println(dashboard.CheckAddr("127.0.0.1:8080", open))
	fmt.Println(dashboard.CheckAddr(":8080", open) != nil)
	fmt.Println(dashboard.CheckAddr(":8080", dashboard.Config{Auth: dashboard.Auth{Token: dashboard.NewToken()}}))
	// Output:
	// <nil>
	// true
	// <nil>
}

// TokenURL is the link to print for the operator: it signs the browser in.
func ExampleDashboard_TokenURL() {
	store := memstream.New(memstream.Config{})
	defer store.Close(context.Background())
	dash, err := dashboard.New(dashboard.Config{
		Stores: []dashboard.Store{{Name: "tasks", Inspector: store}},
		Auth:   dashboard.Auth{Token: "0123456789abcdef0123456789abcdef"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	addr := &net.TCPAddr{IP: net.IPv4zero, Port: 8080} // as from a listener on ":8080"
	fmt.Println(dash.URL(addr))
	fmt.Println(dash.TokenURL(addr))
	// Output:
	// http://localhost:8080/
	// http://localhost:8080/#token=0123456789abcdef0123456789abcdef
}

// deadLetterForExample stores a dead task in s.
func deadLetterForExample(s *memstream.Stream, t *peonify.Task, reason string) {
	ctx := context.Background()
	if err := s.Enqueue(ctx, t); err != nil {
		panic(err)
	}
	ds, err := s.Poll(ctx, 1)
	if err != nil || len(ds) != 1 {
		panic(fmt.Sprint("claiming the task: ", err))
	}
	if err := s.Nack(ctx, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: reason}); err != nil {
		panic(err)
	}
}

// A store that enforces flow-control limits (a peonify.Limiter, found
// through its Inspector or given as Store.Limiter) shows each limit with
// its running and waiting tasks and its busiest keys.
func Example_limits() {
	ctx := context.Background()
	store := memstream.New(memstream.Config{})
	defer store.Close(ctx)
	_ = store.SetLimits([]peonify.Limit{{Name: "email-per-tenant", Type: "email", PerKey: true, Concurrency: 1}})
	for _, key := range []string{"acme", "acme", "acme", "globex"} {
		_ = store.Enqueue(ctx, &peonify.Task{Type: "email", Key: key})
	}
	_, _ = store.Poll(ctx, 10) // as a processor claims: one task of each key

	dash, err := dashboard.New(dashboard.Config{Stores: []dashboard.Store{{Name: "emails", Inspector: store}}})
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := httptest.NewServer(dash)
	defer srv.Close()
	res, err := http.Get(srv.URL + "/api/stats")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer res.Body.Close()
	var snap dashboard.Snapshot
	if err := json.NewDecoder(res.Body).Decode(&snap); err != nil {
		fmt.Println(err)
		return
	}
	for _, l := range snap.Stores[0].Limits {
		fmt.Printf("%s: %d in use, %d waiting\n", l.Name, l.InUse, l.Waiting)
		for _, k := range l.Keys {
			fmt.Printf("  %s: %d in use, %d waiting\n", k.Key, k.InUse, k.Waiting)
		}
	}
	// Output:
	// email-per-tenant: 2 in use, 2 waiting
	//   acme: 1 in use, 2 waiting
	//   globex: 1 in use, 0 waiting
}

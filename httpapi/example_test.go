package httpapi_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/peonify/peonify/httpapi"
	"github.com/peonify/peonify/streams/memstream"
)

// A Go service mounts the API on its mux; a client in any language then
// enqueues with a POST.
func Example() {
	store := memstream.New(memstream.Config{})
	api, err := httpapi.New(httpapi.Config{
		Stores: []httpapi.Store{{Name: "main", Stream: store}},
		Tokens: []httpapi.Token{{Name: "billing", Secret: "s3cret-token-of-at-least-32-chars",
			Scopes: []httpapi.Scope{httpapi.ScopeEnqueue, httpapi.ScopeRead}}},
	})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", api)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	req, _ := http.NewRequest("POST", srv.URL+"/v1/tasks",
		strings.NewReader(`{"id": "invoice-42", "type": "email", "payload": {"to": "ada@example.com"}}`))
	req.Header.Set("Authorization", "Bearer s3cret-token-of-at-least-32-chars")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, resp.Header.Get("Location"))
	fmt.Print(string(body))
	// Output:
	// 201 /v1/tasks/invoice-42?store=main
	// {"id":"invoice-42","store":"main","url":"/v1/tasks/invoice-42?store=main"}
}

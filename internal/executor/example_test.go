package executor_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/executor"
)

// An HTTP executor delivers the payload, with the task ID as the
// idempotency key; a 2xx answer means done.
func ExampleNewHTTP() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Printf("%s %s %s (Idempotency-Key %s)\n", r.Method, r.URL.Path, body, r.Header.Get("Idempotency-Key"))
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()

	h, err := executor.NewHTTP(executor.HTTPConfig{URL: srv.URL + "/hooks/email"})
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()
	err = h.Execute(context.Background(), &peonify.Task{
		ID: "welcome-42", Type: "email", Payload: []byte(`{"to":"ada@example.com"}`), Attempt: 1,
	})
	fmt.Println("error:", err)
	// Output:
	// POST /hooks/email {"to":"ada@example.com"} (Idempotency-Key welcome-42)
	// error: <nil>
}

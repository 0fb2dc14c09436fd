package wsstream_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/http/httptest"
	"strings"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
	"github.com/peonify/peonify/streams/wsstream"
)

// A client sends a task; Send returns once the server has stored it. A
// real intake stores into a durable stream such as sqlitestream; the
// example uses memstream to run anywhere.
func Example() {
	ctx := context.Background()
	store := memstream.New(memstream.Config{})
	defer store.Close(ctx)

	intake, err := wsstream.New(store, wsstream.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(intake)
	defer srv.Close()
	defer intake.Shutdown(ctx)

	c, err := wsstream.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), wsstream.DialOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	err = c.Send(ctx, &peonify.Task{ID: "welcome-ada", Type: "email", Payload: []byte(`{"to": "ada@example.com"}`)})
	if err != nil {
		log.Fatal(err)
	}

	info, err := store.Get(ctx, "welcome-ada")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.State, info.Task.Type, string(info.Task.Payload))
	// Output: pending email {"to": "ada@example.com"}
}

package executor

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/peonify/peonify"
)

// BenchmarkHTTPExecute measures one task delivered to a local server,
// from many workers at once.
func BenchmarkHTTPExecute(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	h, err := NewHTTP(HTTPConfig{URL: srv.URL})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		t := &peonify.Task{ID: "bench", Type: "hook", Payload: []byte(`{"user":42}`), Attempt: 1}
		for pb.Next() {
			if err := h.Execute(context.Background(), t); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

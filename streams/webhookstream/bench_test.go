package webhookstream

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/streams/memstream"
	"github.com/peonify/peonify/streams/sqlitestream"
)

// benchBody is a 1 KiB JSON event.
var benchBody = []byte(`{"action":"opened","pad":"` + strings.Repeat("x", 1024-24) + `"}`)

// BenchmarkVerify measures each preset's check of a 1 KiB body.
func BenchmarkVerify(b *testing.B) {
	now := time.Now()
	for _, tc := range []struct {
		name string
		v    Verifier
		req  request
	}{
		{"github", GitHub{Secrets: secrets(githubSecret)}, githubRequest("d", benchBody)},
		{"stripe", Stripe{Secrets: secrets(stripeSecret)}, stripeRequest("evt_1", now)},
		{"standard", StandardWebhooks{Secrets: secrets(standardSecret)}, standardRequest("msg_1", now, benchBody)},
		{"github-3-secrets", GitHub{Secrets: secrets("a", "b", githubSecret)}, githubRequest("d", benchBody)},
	} {
		h := http.Header{}
		for k, v := range tc.req.header {
			h.Set(k, v)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(tc.req.body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tc.v.Verify(h, tc.req.body, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkServeHTTP measures whole deliveries (read, verify, JSON check,
// durable enqueue, answer) of 1 KiB GitHub events, each with a new
// delivery ID, from concurrent senders: into memory, and into SQLite with
// each commit synced to disk (group commit shares a sync among concurrent
// requests).
func BenchmarkServeHTTP(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B) peonify.Enqueuer
	}{
		{"memstream", func(b *testing.B) peonify.Enqueuer { return memstream.New(memstream.Config{}) }},
		{"sqlite", func(b *testing.B) peonify.Enqueuer {
			s, err := sqlitestream.Open(filepath.Join(b.TempDir(), "tasks.db"), sqlitestream.Config{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
	}
	for _, st := range stores {
		b.Run(st.name, func(b *testing.B) {
			store := st.open(b)
			defer store.(peonify.Stream).Close(context.Background())
			h, err := New(store, Config{Routes: testRoutes(), Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			sig := signGitHub(githubSecret, benchBody)
			var n atomic.Int64
			b.SetBytes(int64(len(benchBody)))
			b.ReportAllocs()
			b.SetParallelism(8) // senders per CPU
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r := httptest.NewRequest(http.MethodPost, "/github", strings.NewReader(string(benchBody)))
					r.Header.Set("Content-Type", "application/json")
					r.Header.Set("X-GitHub-Event", "push")
					r.Header.Set("X-GitHub-Delivery", strconv.FormatInt(n.Add(1), 10))
					r.Header.Set("X-Hub-Signature-256", sig)
					w := httptest.NewRecorder()
					h.ServeHTTP(w, r)
					if w.Code != http.StatusAccepted {
						panic(fmt.Sprintf("status %d: %s", w.Code, w.Body))
					}
				}
			})
		})
	}
}

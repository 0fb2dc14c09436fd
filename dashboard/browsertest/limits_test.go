package browsertest_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/peonify/peonify"
	"github.com/peonify/peonify/dashboard"
	"github.com/peonify/peonify/streams/memstream"
)

// limitedStream is a real memstream with a stand-in Limiter, so that the
// page's limits panel can be tested whatever store enforces limits: it
// reports the stats it is given, and records the ListOptions the page
// asks for.
type limitedStream struct {
	*memstream.Stream

	mu    sync.Mutex
	stats []peonify.LimitStat
	keys  []string // the Key of each List
}

func (s *limitedStream) Unwrap() peonify.Stream { return s.Stream }

func (s *limitedStream) SetLimits([]peonify.Limit) error { return nil }

func (s *limitedStream) LimitStats(context.Context) ([]peonify.LimitStat, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats, nil
}

func (s *limitedStream) List(ctx context.Context, opts peonify.ListOptions) ([]peonify.TaskInfo, error) {
	s.mu.Lock()
	s.keys = append(s.keys, opts.Key)
	s.mu.Unlock()
	return s.Stream.List(ctx, opts)
}

func (s *limitedStream) lastKey() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.keys) == 0 {
		return "(none)"
	}
	return s.keys[len(s.keys)-1]
}

// TestBrowserLimits checks the limits panel of a store: each limit with
// its tasks in use and waiting and its busiest keys, a key that lists its
// tasks when clicked, and keys shown as text, never markup.
func TestBrowserLimits(t *testing.T) {
	chrome := findChromium(t)
	ctx := context.Background()
	mem := memstream.New(memstream.Config{Name: "mem"})
	defer mem.Close(ctx)
	ls := &limitedStream{Stream: mem, stats: []peonify.LimitStat{
		{Name: "email/key", InUse: 2, Waiting: 130, Keys: []peonify.KeyStat{
			{Key: "acme", InUse: 1, Waiting: 100}, {Key: `<img src=x onerror="window.__xss='key'">`, InUse: 1, Waiting: 30}}},
		{Name: "api", InUse: 0, Waiting: 4},
	}}
	// A dead task of key acme, so that the default (dead) list has one.
	if err := mem.Enqueue(ctx, &peonify.Task{ID: "a1", Type: "email", Key: "acme"}); err != nil {
		t.Fatal(err)
	}
	ds, err := mem.Poll(ctx, 1)
	if err != nil || len(ds) != 1 {
		t.Fatalf("claiming: %v, %d", err, len(ds))
	}
	if err := mem.Nack(ctx, ds[0], peonify.NackOptions{Outcome: peonify.OutcomeDead, Reason: "x"}); err != nil {
		t.Fatal(err)
	}

	srv, b := serveDashboard(t, ctx, chrome, dashboard.Config{Stores: []dashboard.Store{{Name: "mem", Inspector: ls}}})
	do, waitJS, evalJS := b.do, b.waitJS, b.evalJS

	do("loading the page", chromedp.Navigate(srv.URL+"/#token="+testToken))
	row := `[data-store="mem"] tr[data-limit="email/key"]`
	do("waiting for the limits", chromedp.WaitVisible(chromedp.CSS(row)))
	if got := evalJS(`Array.from(document.querySelectorAll('[data-store="mem"] table.limits tbody tr')).map((r) => Array.from(r.cells).map((c) => c.textContent.trim()).join('|')).join('\n')`); got !=
		"email/key|2|130|acme 1 / 100 <img src=x onerror=\"window.__xss='key'\"> 1 / 30\napi|0|4|" {
		t.Errorf("the limits panel shows:\n%s", got)
	}
	if got := evalJS(`String(window.__xss) + ' ' + document.querySelectorAll('main img').length`); got != "undefined 0" {
		t.Errorf("a key became markup: window.__xss, images = %s", got)
	}
	if got := evalJS(`document.querySelector('tr[data-id="a1"] .taskkey').textContent`); got != "acme" {
		t.Errorf("the dead task shows key %q, want acme", got)
	}

	// A key lists its tasks; the chip clears the filter.
	do("clicking key acme", chromedp.Click(chromedp.CSS(row+` button[data-key="acme"]`)))
	waitJS("waiting for the key filter", `!document.querySelector('[data-store="mem"] .keychip').hidden`)
	if got := evalJS(`document.querySelector('[data-store="mem"] .keychip').textContent`); got != "key: acme ✕" {
		t.Errorf("the key chip says %q", got)
	}
	waitFor(t, "the list of key acme", func() bool { return ls.lastKey() == "acme" })
	do("clearing the key filter", chromedp.Click(chromedp.CSS(`[data-store="mem"] .keychip`)))
	waitFor(t, "the list of every key", func() bool { return ls.lastKey() == "" })

	b.finish("dashboard-limits.png")
}

// waitFor polls cond for up to 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

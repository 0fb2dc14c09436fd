// Package browsertest runs the dashboard in a real headless Chromium
// (through chromedp) and checks what a user sees: live stats, the dead
// tasks, a retry, and that payloads and errors never run as HTML; and, for
// a store that tracks its tasks, progress bars, results, Cancel buttons
// and workflow views.
//
// It is a module of its own, github.com/peonify/peonify/dashboard/browsertest,
// so that chromedp and the Chrome DevTools protocol stay out of the
// dependencies, and the version selection, of every Peonify user: see the
// README's "Module layout". Run it from this directory:
//
//	go test -race ./...
package browsertest

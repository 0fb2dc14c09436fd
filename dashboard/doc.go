// Package dashboard is Peonify's web dashboard: an http.Handler that shows a
// processor at work and lets operators look into and repair task stores.
//
// The page updates itself every second, without reloading, from a stream
// of server-sent events. For a processor it shows the throughput over the
// last two minutes, the latency percentiles of each task type, the tasks
// running now and for how long, and the polling status of each stream. For
// each store (any peonify.Inspector) it shows the number of tasks in each
// state and lists them with a preview of their payload and their last
// error; dead tasks can be retried or deleted, one by one or all at once,
// and stores that implement Pauser can be paused and resumed. For a store
// that enforces flow-control limits (a peonify.Limiter, see
// Store.Limiter) it shows each limit with its tasks in use and waiting and
// its busiest keys; clicking a key lists that key's tasks.
//
// For a store that keeps the state of its tasks (a peonify.Tracker: the
// embedded store, Postgres, Redis, memstream) the counts include waiting
// and cancelled tasks, a running task shows a progress bar with the last
// progress it reported, a done task shows its result, and tasks that have
// not finished (waiting, pending, scheduled, running) have a Cancel
// button. For a store that runs workflows (a peonify.WorkflowStore) a
// task of a workflow links to the workflow's view: its state, its tasks'
// counts by state, its tasks with their states, parents and progress, and
// a Cancel workflow button while it runs.
//
// The page is plain HTML, CSS and JavaScript embedded in the program: no
// build step, nothing loaded from elsewhere, so it works offline.
//
// A minimal program serves a processor and its store on this machine only:
//
//	func run(ctx context.Context) error {
//		store, err := sqlitestream.Open("tasks.db", sqlitestream.Config{})
//		if err != nil {
//			return err
//		}
//		p, err := peonify.New(peonify.Config{})
//		if err != nil {
//			return err
//		}
//		if err := p.AddTaskList(peonify.TaskList{"email": sendEmail}); err != nil {
//			return err
//		}
//		if err := p.AddStream(store); err != nil {
//			return err
//		}
//		dash, err := dashboard.New(dashboard.Config{
//			Processor: p,
//			Stores:    []dashboard.Store{{Name: "tasks", Inspector: store}},
//			Auth:      dashboard.Auth{Token: os.Getenv("PEONIFY_DASHBOARD_TOKEN")},
//		})
//		if err != nil {
//			return err
//		}
//		ln, err := dash.Listen("127.0.0.1:8080")
//		if err != nil {
//			return err
//		}
//		fmt.Println("dashboard:", dash.TokenURL(ln.Addr()))
//		go dash.Serve(ctx, ln)
//		return p.Run(ctx)
//	}
//
// To mount it under a prefix of a server of your own, strip the prefix;
// every URL in the page is relative:
//
//	mux.Handle("/admin/tasks/", http.StripPrefix("/admin/tasks", dash))
//
// Serve ends open event streams when its context ends. With an http.Server
// of your own, set its BaseContext to a context that ends at shutdown, or
// Shutdown waits for every open page.
//
// # Security
//
// Authentication. Config.Auth takes a bearer token, a user name and
// password for HTTP basic authentication, or both. Credentials are
// compared in constant time. When Auth is set, every API call and the
// event stream need a credential (the page's HTML, script and style are
// public: they hold no data). A browser gets the token once from a link
// ending in "#token=<token>" (see Dashboard.TokenURL; a URL fragment is
// never sent to the server nor written to access logs) or from the page's
// sign-in form, and keeps it for the tab's session only. Without Auth the
// dashboard is read-only: anyone who can reach it sees the stores, nobody
// changes them. CheckAddr, which Listen, Serve and ListenAndServe call,
// refuses a dashboard without Auth on any address but a loopback one.
//
// CSRF. Every change (a POST) needs, besides a valid credential, two
// checks against cross-site request forgery, since basic authentication
// is sent by the browser by itself, as a cookie would be:
//
//   - http.CrossOriginProtection refuses requests that the browser marks as
//     cross-origin (Sec-Fetch-Site, or an Origin header that does not match
//     the host). It needs no state, but older browsers send neither header.
//   - A signed double-submit token covers those browsers too. GET
//     api/session, which needs a credential, returns a token and sets it in
//     an HttpOnly, SameSite=Strict cookie; each POST must carry it in the
//     X-CSRF-Token header as well. A page on another site can neither read
//     the token nor set that header. The token is a random nonce with an
//     HMAC of it and the signed-in identity, under a key drawn when the
//     Dashboard is created, so a token planted in the cookie by a
//     neighbouring subdomain, or made for another user, is refused. The key
//     is per process: after a restart the page fetches a new token by
//     itself.
//
// Both were chosen over a server-side session store because the dashboard
// keeps no state and may run in several processes behind one address.
// Scripts such as curl do the same as the page: GET api/session with the
// credential, then POST with the cookie and the header.
//
// Task data. Payloads, errors and types come from producers and are never
// trusted: the API returns them only as JSON (with <, > and & escaped, and
// X-Content-Type-Options: nosniff), and the page inserts them as text,
// never as HTML. A Content-Security-Policy allows only the dashboard's own
// script, so that an injection could not run code anyway. Payloads are
// truncated in lists (Config.PreviewBytes) and can be hidden for sensitive
// task types (Config.HidePayload, HideTypes).
//
// # API
//
// The page uses a small JSON API, which scripts may use too. Paths are
// relative to where the dashboard is mounted; {name} is a store's name.
//
//	GET  api/session                     Session; sets the CSRF cookie
//	GET  api/stats                       Snapshot
//	GET  events                          a Snapshot every Interval, as "event: snapshot" server-sent events
//	GET  api/stores/{name}/tasks         TaskPage; ?state=dead (required) &type= &key= &after=<cursor> &limit=1..500
//	GET  api/stores/{name}/tasks/{id}    TaskView with up to 64 KiB of payload and the headers
//	POST api/stores/{name}/retry         Selection → Result: retry dead tasks ({"ids": [...]} or {"all": true})
//	POST api/stores/{name}/delete        Selection → Result: delete tasks, or with "all" every dead task
//	POST api/stores/{name}/cancel        {"ids": [...]} → Result: cancel tasks that have not finished (a Tracker)
//	GET  api/stores/{name}/workflows/{id}          WorkflowView: state, counts, the first 1000 tasks (a WorkflowStore)
//	POST api/stores/{name}/workflows/{id}/cancel   → Result: cancel the workflow's unfinished tasks
//	POST api/stores/{name}/pause         → PauseState, for stores that implement Pauser
//	POST api/stores/{name}/resume        → PauseState
//
// A TaskView carries the task's workflow, parents and progress, and
// whether it has a result; the result itself (up to 64 KiB) comes with
// one task only, hidden with the payload by Config.HidePayload. A
// StoreView says whether the store tracks tasks (Tracks) and runs
// workflows (Workflows).
//
// A Snapshot's StoreView lists the store's limits (LimitView: name,
// inUse, waiting and the busiest keys), read from its Limiter with the
// counts, at most once per Interval however many pages are open.
//
// Errors are an APIError with a status of 400 (bad request), 401
// (credential missing or wrong), 403 (read-only dashboard, cross-origin,
// or CSRF token missing), 404 (no such store, task or workflow), 501 (the
// store cannot pause, cancel or run workflows) or 502 (the store failed).
package dashboard

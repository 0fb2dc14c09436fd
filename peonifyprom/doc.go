// Package peonifyprom exports a peonify processor's activity as Prometheus
// metrics.
//
// A Metrics counts task outcomes from the processor's events and reads
// its queue, workers and streams from Processor.Stats at each scrape. A
// processor is configured before it exists, so wiring takes three steps:
// create the Metrics, pass its OnEvent in peonify.Config, then Attach it
// to the processor and register it:
//
//	func run(ctx context.Context) error {
//		m, err := peonifyprom.New(peonifyprom.Config{})
//		if err != nil {
//			return err
//		}
//		p, err := peonify.New(peonify.Config{OnEvent: m.OnEvent})
//		if err != nil {
//			return err
//		}
//		if err := p.AddTaskList(peonify.TaskList{"email": sendEmail}); err != nil {
//			return err
//		}
//		if err := p.AddStream(memstream.New(memstream.Config{})); err != nil {
//			return err
//		}
//		if err := m.Attach(p); err != nil {
//			return err
//		}
//		reg := prometheus.NewRegistry()
//		reg.MustRegister(m, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
//		http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//		go http.ListenAndServe(":9090", nil)
//		return p.Run(ctx)
//	}
//
// To keep an OnEvent of your own, call both from one function:
//
//	OnEvent: func(e peonify.Event) { m.OnEvent(e); mine(e) }
//
// # Metrics
//
// Counted from events, labelled by stream and task type:
//
//	peonify_tasks_succeeded_total      handler returned nil; acked
//	peonify_tasks_failed_total         retried + dead
//	peonify_tasks_retried_total        failed attempts that will be tried again
//	peonify_tasks_dead_total           dead-lettered (permanent error, out of attempts, unknown type)
//	peonify_tasks_released_total       handed back at shutdown, not counted as attempts
//	peonify_tasks_snoozed_total        asked to run later, not counted as attempts
//	peonify_tasks_lease_lost_total     lease lost; the result was discarded
//	peonify_tasks_cancelled_total      cancelled (peonify.Tracker.Cancel) before or while running; not a failure
//	peonify_task_run_seconds           histogram of handler run time, per attempt
//	peonify_task_local_wait_seconds    histogram of the wait in the local queue (claimed → started)
//	peonify_task_wait_seconds          histogram of the end-to-end wait of first attempts
//	                                   (enqueued, or RunAt if later → started)
//
// Read from Processor.Stats at each scrape:
//
//	peonify_workers                         worker pool size
//	peonify_queued_tasks                    tasks claimed and waiting for a worker
//	peonify_tasks_in_flight                 running tasks, by stream and type
//	peonify_task_oldest_running_seconds     run time of the longest-running task (alert on stuck tasks)
//	peonify_ack_errors_total                acks that failed; those tasks will run again
//	peonify_tasks_polled_total              tasks delivered, by stream
//	peonify_stream_polls_total              Poll calls, by stream
//	peonify_stream_poll_errors_total        failed Poll calls, by stream
//	peonify_stream_backing_off              1 while a stream's polling waits after an error
//
// Read at each scrape from the streams that enforce flow-control limits
// (peonify.Limiter), once attached with AttachLimiter, labelled by stream
// and limit (the peonify.Limit's Name):
//
//	peonify_limit_in_use                    running tasks that count against the limit
//	peonify_limit_waiting                   ready tasks the limit applies to, not started yet
//	peonify_limit_stats_errors_total        scrapes at which a stream's limit stats could not be
//	                                        read within Config.LimitTimeout (by stream)
//
// The stats come from the store (a query, or a Redis script), so a scrape
// costs one round trip per such stream; the streams are read at once, and
// one that does not answer within Config.LimitTimeout (3s by default) is
// left out of that scrape rather than holding it. Busiest keys are not
// exported: keys are chosen by producers and would make series without
// bound; the dashboard and `peonify tasks limits` show them.
//
//	if l, ok := peonify.As[peonify.Limiter](stream); ok {
//		if err := m.AttachLimiter("orders", l); err != nil {
//			return err
//		}
//	}
//
// # Store metrics, for autoscaling
//
// Metrics sees one processor; to scale processors on the backlog, a
// StoreMetrics reads what is in the stores themselves through their
// peonify.Inspector, cached so that one query round per store per
// StoreConfig.Interval (15s by default) is made whatever the scrape rate:
//
//	peonify_store_tasks{store,state}            tasks in each state
//	peonify_store_oldest_pending_seconds{store} queue latency: how long the oldest pending
//	                                            task has been ready to run (0 when none)
//	peonify_store_query_errors_total{store}     failed query rounds
//
// The StoreMetrics documentation says how the age is computed and when it
// is only a lower bound; a store may implement OldestPendingReporter to
// make it exact and cheap. KEDA (Prometheus scaler) and HPA
// external-metric queries on these series are in the README of
// cmd/peonify, "Autoscaling".
//
// # Cardinality
//
// Stream names are the ones given to AddStream (and AttachLimiter), limit
// names are those of the limits the program sets, and the type label is
// the task's type only if the attached processor has a handler for it;
// every other type is labelled UnknownType ("unknown"). The number of
// series is therefore bounded by streams × registered types, whatever
// producers send. Several processors can share a registry when each
// Metrics has its own Config.ConstLabels.
package peonifyprom

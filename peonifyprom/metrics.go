package peonifyprom

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/peonify/peonify"
	"github.com/prometheus/client_golang/prometheus"
)

// UnknownType is the type label of tasks whose type has no handler in the
// attached processor. Only registered type names become label values, so a
// producer sending random types cannot grow the number of series.
const UnknownType = "unknown"

// Config configures Metrics. The zero value is valid.
type Config struct {
	// ConstLabels are added to every metric, for example
	// {"processor": "billing"} to tell apart several processors that
	// register on one registry. Defaults to none.
	ConstLabels prometheus.Labels

	// RunBuckets are the upper bounds, in seconds, of the buckets of
	// peonify_task_run_seconds; they must increase. Defaults to 1ms, 5ms,
	// 10ms, 50ms, 100ms, 500ms, 1s, 5s, 10s, 30s, 1m and 5m.
	RunBuckets []float64

	// WaitBuckets are the upper bounds, in seconds, of the buckets of
	// peonify_task_local_wait_seconds and peonify_task_wait_seconds; they
	// must increase. Defaults to RunBuckets' defaults followed by 15m and
	// 1h.
	WaitBuckets []float64

	// LimitTimeout bounds the reading of the limiters' stats (see
	// AttachLimiter) at each scrape; a limiter that does not answer in
	// time is left out of that scrape and counted in
	// peonify_limit_stats_errors_total. Defaults to 3s, under
	// Prometheus's default scrape timeout of 10s.
	LimitTimeout time.Duration
}

// defaultLimitTimeout is the default of Config.LimitTimeout.
const defaultLimitTimeout = 3 * time.Second

func (c Config) withDefaults() Config {
	if c.LimitTimeout == 0 {
		c.LimitTimeout = defaultLimitTimeout
	}
	if c.RunBuckets == nil {
		c.RunBuckets = []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60, 300}
	}
	if c.WaitBuckets == nil {
		c.WaitBuckets = []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60, 300, 900, 3600}
	}
	return c
}

func (c Config) validate() error {
	for field, b := range map[string][]float64{"Config.RunBuckets": c.RunBuckets, "Config.WaitBuckets": c.WaitBuckets} {
		if b == nil {
			continue
		}
		if len(b) == 0 {
			return &peonify.ConfigError{Field: "peonifyprom." + field, Reason: "is empty: leave it nil for the defaults"}
		}
		for i := 1; i < len(b); i++ {
			if !(b[i] > b[i-1]) {
				return &peonify.ConfigError{Field: "peonifyprom." + field,
					Reason: fmt.Sprintf("must increase, but bucket %d (%g) does not exceed bucket %d (%g)", i, b[i], i-1, b[i-1])}
			}
		}
	}
	if c.LimitTimeout < 0 {
		return &peonify.ConfigError{Field: "peonifyprom.Config.LimitTimeout",
			Reason: fmt.Sprintf("is %s: use a positive duration, or 0 for %s", c.LimitTimeout, defaultLimitTimeout)}
	}
	for name := range c.ConstLabels {
		if name == "stream" || name == "type" || name == "limit" {
			return &peonify.ConfigError{Field: "peonifyprom.Config.ConstLabels",
				Reason: fmt.Sprintf("label %q is one of the metrics' own labels: choose another name", name)}
		}
	}
	return nil
}

// Metrics exports a processor's activity to Prometheus. It counts task
// outcomes from the processor's events (OnEvent) and reads the queue,
// workers, running tasks and stream polling from Processor.Stats when
// Prometheus scrapes it (Collect), so the hot path costs only a few atomic
// additions per task.
//
// Wire it in three steps, because a Processor is configured before it
// exists:
//
//	m, err := peonifyprom.New(peonifyprom.Config{})
//	p, err := peonify.New(peonify.Config{OnEvent: m.OnEvent})
//	err = m.Attach(p)
//	prometheus.MustRegister(m)
//
// To keep an OnEvent of your own, call both:
//
//	OnEvent: func(e peonify.Event) { m.OnEvent(e); mine(e) }
//
// Metrics is safe for concurrent use. See the package documentation for
// the list of metrics.
type Metrics struct {
	succeeded, failed, retried, dead, released, snoozed, leaseLost, cancelled *prometheus.CounterVec
	run, localWait, wait                                                      *prometheus.HistogramVec

	workers, queued, inFlight, oldest, ackErrors *prometheus.Desc
	polled, polls, pollErrors, backingOff        *prometheus.Desc
	limitInUse, limitWaiting                     *prometheus.Desc
	limitErrors                                  *prometheus.CounterVec

	limitTimeout time.Duration
	limiters     atomic.Pointer[[]namedLimiter] // copied on write

	proc   atomic.Pointer[peonify.Processor]
	known  atomic.Pointer[map[string]bool] // the processor's task types, once it runs
	series sync.Map                        // seriesKey → *series
	mu     sync.Mutex                      // serialises Attach
}

// seriesKey is a (stream, type) label pair.
type seriesKey struct{ stream, typ string }

// series holds the children of the event metrics for one label pair, so an
// event costs no label hashing.
type series struct {
	succeeded, failed, retried, dead, released, snoozed, leaseLost, cancelled prometheus.Counter
	timings                                                                   atomic.Pointer[timings]
}

// timings holds the histograms of one label pair. They are made when a
// task of the pair first runs, so pairs whose tasks never run (unknown
// types) have no histogram series.
type timings struct {
	run, localWait, wait prometheus.Observer
}

func (m *Metrics) timingsOf(s *series, k seriesKey) *timings {
	if t := s.timings.Load(); t != nil {
		return t
	}
	t := &timings{
		run:       m.run.WithLabelValues(k.stream, k.typ),
		localWait: m.localWait.WithLabelValues(k.stream, k.typ),
		wait:      m.wait.WithLabelValues(k.stream, k.typ),
	}
	if !s.timings.CompareAndSwap(nil, t) {
		return s.timings.Load()
	}
	return t
}

var _ prometheus.Collector = (*Metrics)(nil)

// New returns Metrics configured by cfg. It reports a
// *peonify.ConfigError naming the field if cfg is invalid.
func New(cfg Config) (*Metrics, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	labels := []string{"stream", "type"}
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: cfg.ConstLabels}, labels)
	}
	histogram := func(name, help string, buckets []float64) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets,
			ConstLabels: cfg.ConstLabels}, labels)
	}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, cfg.ConstLabels)
	}
	return &Metrics{
		succeeded: counter("peonify_tasks_succeeded_total", "Tasks whose handler returned nil and that were acked."),
		failed:    counter("peonify_tasks_failed_total", "Failed tasks: the sum of retried and dead."),
		retried:   counter("peonify_tasks_retried_total", "Failed attempts scheduled for another attempt."),
		dead:      counter("peonify_tasks_dead_total", "Tasks dead-lettered: permanent errors, out of attempts, or unknown type."),
		released:  counter("peonify_tasks_released_total", "Tasks handed back unstarted or interrupted by shutdown, not counted as attempts."),
		snoozed:   counter("peonify_tasks_snoozed_total", "Tasks that asked to run again later, not counted as attempts."),
		leaseLost: counter("peonify_tasks_lease_lost_total", "Tasks whose lease was lost; their results were discarded."),
		cancelled: counter("peonify_tasks_cancelled_total", "Tasks cancelled (Tracker.Cancel) before they started or while they ran; their results were discarded."),

		run: histogram("peonify_task_run_seconds", "How long handlers ran, per attempt.", cfg.RunBuckets),
		localWait: histogram("peonify_task_local_wait_seconds",
			"How long claimed tasks waited in the local queue for a worker.", cfg.WaitBuckets),
		wait: histogram("peonify_task_wait_seconds",
			"How long first attempts waited from enqueue (or RunAt, if later) until their handler started.", cfg.WaitBuckets),

		workers:    desc("peonify_workers", "Size of the worker pool."),
		queued:     desc("peonify_queued_tasks", "Tasks claimed from streams and waiting in the local queue for a worker."),
		inFlight:   desc("peonify_tasks_in_flight", "Tasks whose handler is running.", "stream", "type"),
		oldest:     desc("peonify_task_oldest_running_seconds", "How long the longest-running task has run; 0 when none runs."),
		ackErrors:  desc("peonify_ack_errors_total", "Acks that failed after retries; their tasks will run again."),
		polled:     desc("peonify_tasks_polled_total", "Tasks delivered by the stream.", "stream"),
		polls:      desc("peonify_stream_polls_total", "Poll calls made to the stream.", "stream"),
		pollErrors: desc("peonify_stream_poll_errors_total", "Poll calls that failed.", "stream"),
		backingOff: desc("peonify_stream_backing_off", "1 while the stream's last poll failed and polling waits to retry, else 0.", "stream"),

		limitInUse:   desc("peonify_limit_in_use", "Running tasks that count against a flow-control limit of the stream (every key's, for a per-key limit).", "stream", "limit"),
		limitWaiting: desc("peonify_limit_waiting", "Ready tasks a flow-control limit of the stream applies to that have not started.", "stream", "limit"),
		limitErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "peonify_limit_stats_errors_total",
			Help: "Scrapes at which a stream's limit stats could not be read (an error, or no answer within the timeout).", ConstLabels: cfg.ConstLabels}, []string{"stream"}),
		limitTimeout: cfg.LimitTimeout,
	}, nil
}

// namedLimiter is a Limiter attached under its stream's name.
type namedLimiter struct {
	stream string
	l      peonify.Limiter
}

// AttachLimiter makes m export, at each scrape, the in-use and waiting
// counts of each limit that l enforces (see peonify.Limiter.LimitStats),
// labelled with stream, the name the stream has in the processor, and
// limit, the limit's name. A stream that enforces limits is a
// peonify.Limiter, found through wrappers with peonify.As:
//
//	if l, ok := peonify.As[peonify.Limiter](stream); ok {
//		err = m.AttachLimiter("orders", l)
//	}
//
// The stats are read from the store when Prometheus scrapes, each
// limiter at once, within Config.LimitTimeout. Attaching a second limiter
// under the same stream name is an error.
func (m *Metrics) AttachLimiter(stream string, l peonify.Limiter) error {
	if l == nil {
		return errors.New("peonifyprom: AttachLimiter was given a nil Limiter")
	}
	if stream == "" {
		return errors.New("peonifyprom: AttachLimiter was given no stream name: pass the name the stream has in the processor")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var cur []namedLimiter
	if p := m.limiters.Load(); p != nil {
		cur = *p
	}
	if slices.ContainsFunc(cur, func(nl namedLimiter) bool { return nl.stream == stream }) {
		return fmt.Errorf("peonifyprom: a Limiter is already attached for stream %q", stream)
	}
	next := append(slices.Clip(cur), namedLimiter{stream, l})
	m.limiters.Store(&next)
	m.limitErrors.WithLabelValues(stream) // from zero
	return nil
}

// Attach makes m read p's stats at each scrape and label tasks with p's
// registered task types. Call it before p.Run. Attaching the same
// processor again does nothing; attaching another one is an error, since
// one Metrics describes one processor (create one Metrics per processor,
// with distinct Config.ConstLabels).
//
// Without Attach, m still counts events but exports none of the metrics
// read from Stats, and it labels tasks that never started UnknownType,
// since it cannot tell which types are registered.
func (m *Metrics) Attach(p *peonify.Processor) error {
	if p == nil {
		return errors.New("peonifyprom: Attach was given a nil processor: pass the *peonify.Processor that peonify.New returned")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch cur := m.proc.Load(); {
	case cur == p:
		return nil
	case cur != nil:
		return errors.New("peonifyprom: Metrics is already attached to another processor: create one Metrics per processor")
	}
	m.proc.Store(p)
	return nil
}

// OnEvent records one task outcome. Put it in peonify.Config.OnEvent; it
// never blocks.
func (m *Metrics) OnEvent(e peonify.Event) {
	if e.Task == nil {
		return
	}
	k := seriesKey{e.Stream, m.typeLabel(e)}
	s := m.seriesFor(k)
	switch e.Kind {
	case peonify.EventSucceeded:
		s.succeeded.Inc()
	case peonify.EventRetried:
		s.retried.Inc()
		s.failed.Inc()
	case peonify.EventDead:
		s.dead.Inc()
		s.failed.Inc()
	case peonify.EventReleased:
		s.released.Inc()
	case peonify.EventSnoozed:
		s.snoozed.Inc()
	case peonify.EventLeaseLost:
		s.leaseLost.Inc()
	case peonify.EventCancelled:
		s.cancelled.Inc()
	}
	if e.Started.IsZero() {
		return
	}
	// One event per handler run carries Started: observe each run once.
	tm := m.timingsOf(s, k)
	tm.run.Observe(e.Duration.Seconds())
	if !e.Claimed.IsZero() {
		tm.localWait.Observe(max(e.Started.Sub(e.Claimed), 0).Seconds())
	}
	// Later attempts waited for a retry delay on purpose; only first
	// attempts measure how long work waits to be picked up.
	if t := e.Task; t.Attempt <= 1 && !t.EnqueuedAt.IsZero() {
		ready := t.EnqueuedAt
		if t.RunAt.After(ready) {
			ready = t.RunAt
		}
		tm.wait.Observe(max(e.Started.Sub(ready), 0).Seconds())
	}
}

// typeLabel returns the type label of e's task: its type if registered,
// else UnknownType.
func (m *Metrics) typeLabel(e peonify.Event) string {
	typ := e.Task.Type
	if known := m.knownTypes(); known != nil {
		if known[typ] {
			return typ
		}
		return UnknownType
	}
	if !e.Started.IsZero() && typ != "" {
		return typ // only the handler of a registered type starts
	}
	return UnknownType
}

// knownTypes returns the attached processor's task types, or nil if no
// processor is attached or it has not started. Events come only from a
// running processor, so the first event loads them.
func (m *Metrics) knownTypes() map[string]bool {
	if k := m.known.Load(); k != nil {
		return *k
	}
	p := m.proc.Load()
	if p == nil {
		return nil
	}
	return m.learn(p.Stats())
}

// learn records the task types of a running processor from its stats and
// creates the event counters for every stream and type, so that rates
// start from zero rather than from the first event. It returns the types,
// or nil if the processor has not started.
func (m *Metrics) learn(s peonify.Stats) map[string]bool {
	if k := m.known.Load(); k != nil {
		return *k
	}
	if s.Types == nil {
		return nil
	}
	known := make(map[string]bool, len(s.Types))
	for typ := range s.Types {
		if typ != "" {
			known[typ] = true
		}
	}
	if !m.known.CompareAndSwap(nil, &known) {
		return *m.known.Load()
	}
	for _, st := range s.Streams {
		for typ := range known {
			for _, v := range m.counterVecs() {
				v.WithLabelValues(st.Name, typ)
			}
		}
	}
	return known
}

func (m *Metrics) counterVecs() []*prometheus.CounterVec {
	return []*prometheus.CounterVec{m.succeeded, m.failed, m.retried, m.dead, m.released, m.snoozed, m.leaseLost, m.cancelled}
}

// seriesFor returns the event metrics of one label pair, creating them on
// first use.
func (m *Metrics) seriesFor(k seriesKey) *series {
	stream, typ := k.stream, k.typ
	if s, ok := m.series.Load(k); ok {
		return s.(*series)
	}
	s := &series{
		succeeded: m.succeeded.WithLabelValues(stream, typ),
		failed:    m.failed.WithLabelValues(stream, typ),
		retried:   m.retried.WithLabelValues(stream, typ),
		dead:      m.dead.WithLabelValues(stream, typ),
		released:  m.released.WithLabelValues(stream, typ),
		snoozed:   m.snoozed.WithLabelValues(stream, typ),
		leaseLost: m.leaseLost.WithLabelValues(stream, typ),
		cancelled: m.cancelled.WithLabelValues(stream, typ),
	}
	got, _ := m.series.LoadOrStore(k, s)
	return got.(*series)
}

// Describe sends the descriptors of every metric m exports. It implements
// prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, v := range m.counterVecs() {
		v.Describe(ch)
	}
	m.run.Describe(ch)
	m.localWait.Describe(ch)
	m.wait.Describe(ch)
	m.limitErrors.Describe(ch)
	for _, d := range m.descs() {
		ch <- d
	}
}

func (m *Metrics) descs() []*prometheus.Desc {
	return []*prometheus.Desc{m.workers, m.queued, m.inFlight, m.oldest, m.ackErrors,
		m.polled, m.polls, m.pollErrors, m.backingOff, m.limitInUse, m.limitWaiting}
}

// Collect sends the current value of every metric: the event metrics, and
// gauges and counters read from the attached processor's Stats. It
// implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	if p := m.proc.Load(); p != nil {
		m.collectStats(ch, p.Stats())
	}
	m.collectLimits(ch)
	m.limitErrors.Collect(ch)
	for _, v := range m.counterVecs() {
		v.Collect(ch)
	}
	m.run.Collect(ch)
	m.localWait.Collect(ch)
	m.wait.Collect(ch)
}

func (m *Metrics) collectStats(ch chan<- prometheus.Metric, s peonify.Stats) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(m.workers, float64(s.Workers))
	gauge(m.queued, float64(s.QueueDepth))
	counter(m.ackErrors, s.AckErrors)
	var oldest time.Duration
	for _, f := range s.InFlight {
		oldest = max(oldest, f.Running)
	}
	gauge(m.oldest, oldest.Seconds())

	for _, st := range s.Streams {
		counter(m.polled, st.Polled, st.Name)
		counter(m.polls, st.Polls, st.Name)
		counter(m.pollErrors, st.PollErrors, st.Name)
		backingOff := 0.0
		if st.BackingOff {
			backingOff = 1
		}
		gauge(m.backingOff, backingOff, st.Name)
	}

	// In-flight tasks per stream and type, with zeros for every pair, so a
	// series does not vanish when its tasks finish.
	known := m.learn(s)
	running := make(map[seriesKey]int)
	for _, st := range s.Streams {
		for typ := range known {
			running[seriesKey{st.Name, typ}] = 0
		}
	}
	for _, f := range s.InFlight {
		typ := f.Type
		if known != nil && !known[typ] {
			typ = UnknownType
		}
		running[seriesKey{f.Stream, typ}]++
	}
	for k, n := range running {
		gauge(m.inFlight, float64(n), k.stream, k.typ)
	}
}

// collectLimits reads the stats of the attached limiters, all at once,
// and sends a gauge of in use and of waiting per limit. A limiter that
// fails or does not answer within limitTimeout sends nothing and counts
// an error.
func (m *Metrics) collectLimits(ch chan<- prometheus.Metric) {
	p := m.limiters.Load()
	if p == nil || len(*p) == 0 {
		return
	}
	ls := *p
	ctx, cancel := context.WithTimeout(context.Background(), m.limitTimeout)
	defer cancel()
	type answer struct {
		stats []peonify.LimitStat
		err   error
	}
	answers := make([]chan answer, len(ls))
	for i, nl := range ls {
		answers[i] = make(chan answer, 1)
		go func() {
			st, err := nl.l.LimitStats(ctx)
			answers[i] <- answer{st, err}
		}()
	}
	for i, nl := range ls {
		var a answer
		select {
		case a = <-answers[i]:
		case <-ctx.Done():
			a.err = ctx.Err() // a limiter that ignores ctx is not waited for
		}
		if a.err != nil {
			m.limitErrors.WithLabelValues(nl.stream).Inc()
			continue
		}
		for _, st := range a.stats {
			ch <- prometheus.MustNewConstMetric(m.limitInUse, prometheus.GaugeValue, float64(st.InUse), nl.stream, st.Name)
			ch <- prometheus.MustNewConstMetric(m.limitWaiting, prometheus.GaugeValue, float64(st.Waiting), nl.stream, st.Name)
		}
	}
}

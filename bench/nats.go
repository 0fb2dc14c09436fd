package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/peonify/peonify/streams/natsstream"
)

// natsMaxFetch is natsstream's cap on one fetch, whatever the processor
// asks for.
const natsMaxFetch = 1000

// natsBroker runs Peonify (natsstream) and the raw JetStream ceiling on
// one NATS server. Every run gets a connection and JetStream streams of
// its own (file storage, natsstream's defaults), deleted afterwards.
type natsBroker struct {
	url   string
	nc    *nats.Conn // set-up, checks and clean-up
	js    jetstream.JetStream
	log   *slog.Logger
	fetch int // -prefetch: the raw loop's fetch size, 0 to derive it
	meter cpuMeter
}

func dialNATS(ctx context.Context, url string, log *slog.Logger, fetch int) (*natsBroker, error) {
	nc, js, err := connectNATS(url)
	if err != nil {
		return nil, err
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("nats at %s: JetStream is not available (start nats-server with -js): %w", nc.ConnectedUrlRedacted(), err)
	}
	return &natsBroker{url: url, nc: nc, js: js, log: log, fetch: fetch, meter: procCPUByName("nats-server")}, nil
}

// connectNATS opens a connection with JetStream.
func connectNATS(url string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, nats.Name("peonify-bench"))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to nats at %s (set -nats-url or PEONIFY_TEST_NATS_URL): %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

func (b *natsBroker) describe() string {
	cpu := "server CPU read from /proc"
	if b.meter == nil {
		cpu = "server CPU not measured (no local nats-server process)"
	}
	return fmt.Sprintf("nats: server %s at %s, JetStream file storage; a connection and streams of its own per run; %s",
		b.nc.ConnectedServerVersion(), b.nc.ConnectedUrlRedacted(), cpu)
}

func (b *natsBroker) close() { b.nc.Close() }

// rawFetch is the raw loop's fetch size: -prefetch, or what a Peonify
// poll asks for at most with cfg, within natsstream's cap.
func (b *natsBroker) rawFetch(cfg peonifyConfig) int {
	if b.fetch > 0 {
		return b.fetch
	}
	return min(cfg.QueueSize, natsMaxFetch)
}

func (b *natsBroker) fetchNote(cfg peonifyConfig) string {
	return fmt.Sprintf("fetch: Peonify fetches its free capacity with a no-wait pull request that expires in 10ms (at most QueueSize %d, capped at %d "+
		"per fetch); the raw loop FetchNoWait(%d); -v shows Peonify's mean fetch", cfg.QueueSize, natsMaxFetch, b.rawFetch(cfg))
}

// natsConfig returns the configuration of a fresh stream for one run.
func natsConfig(log *slog.Logger) natsstream.Config {
	name := randName("PBENCH_")
	return natsstream.Config{Stream: name, Subject: "pbench." + name, Logger: log}
}

func (b *natsBroker) peonify(cfg peonifyConfig) contender {
	return contender{name: "peonify", config: cfg.String() + ", natsstream defaults (file storage, AckWait 30s)",
		make: func(ctx context.Context, e *env, rec *recorder) (system, error) {
			nc, js, err := connectNATS(b.url)
			if err != nil {
				return nil, err
			}
			scfg := natsConfig(e.log)
			cleanup := func() {
				b.teardown(scfg)
				nc.Close()
			}
			if err := natsstream.Setup(ctx, js, scfg); err != nil {
				cleanup()
				return nil, err
			}
			st, err := natsstream.New(js, scfg)
			if err != nil {
				cleanup()
				return nil, err
			}
			verify := func(ctx context.Context, n int) error {
				check, err := natsstream.New(b.js, scfg)
				if err != nil {
					return err
				}
				defer check.Close(context.WithoutCancel(ctx))
				// The server removes acked messages from the work queue
				// a moment after it has the acks.
				return eventually(ctx, 5*time.Second, func() error { return emptyCounts(ctx, check, n) })
			}
			return newBrokerPeonify(cfg, e, rec, st, b.meter, verify, cleanup)
		}}
}

// teardown deletes the streams of scfg and logs a failure.
func (b *natsBroker) teardown(scfg natsstream.Config) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := natsstream.Teardown(ctx, b.js, scfg); err != nil {
		b.log.Error("bench: deleting nats streams", "stream", scfg.Stream, "err", err)
	}
}

func (b *natsBroker) peers(map[string]bool) (tuned, once []contender) { return nil, nil }

// raw drains n messages, stored by natsstream, from the same kind of
// durable pull consumer with no library: one loop of FetchNoWait and an
// Ack of each message, on the nats.go client alone, then a flush so that
// the server has every ack.
func (b *natsBroker) raw(ctx context.Context, n int, cfg peonifyConfig) (result, error) {
	fetch := b.rawFetch(cfg)
	res := result{mode: "drain", system: rawLabel("nats"), n: n,
		config: fmt.Sprintf("FetchNoWait(%d), JSON decode + Ack of each message, one loop", fetch)}
	nc, js, err := connectNATS(b.url)
	if err != nil {
		return res, err
	}
	defer nc.Close()
	scfg := natsConfig(b.log)
	defer b.teardown(scfg)
	if err := natsstream.Setup(ctx, js, scfg); err != nil {
		return res, err
	}
	producer, err := natsstream.New(js, scfg)
	if err != nil {
		return res, err
	}
	if err := enqueueAndClose(ctx, producer, n); err != nil {
		return res, err
	}
	cons, err := js.Consumer(ctx, scfg.Stream, "peonify") // natsstream's default consumer
	if err != nil {
		return res, err
	}
	seen := newSeenSet(n)

	t0, cpu0 := time.Now(), cpuTime()
	srv0, srvOK := meterOrZero(ctx, b.meter)
	deadline := t0.Add(time.Minute)
	for got := 0; got < n; {
		msgs, err := cons.FetchNoWait(fetch)
		if err != nil {
			return res, fmt.Errorf("raw: fetch: %w", err)
		}
		batch := 0
		for m := range msgs.Messages() {
			seen.add(m.Data())
			if err := m.Ack(); err != nil {
				return res, fmt.Errorf("raw: ack: %w", err)
			}
			batch++
		}
		if err := msgs.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return res, fmt.Errorf("raw: fetch: %w", err)
		}
		got += batch
		if batch == 0 && time.Now().After(deadline) {
			return res, fmt.Errorf("raw: only %d of %d messages came within a minute", got, n)
		}
	}
	flushCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = nc.FlushWithContext(flushCtx)
	cancel()
	if err != nil {
		return res, fmt.Errorf("raw: waiting for the server to have every ack: %w", err)
	}
	res.elapsed, res.cpu = time.Since(t0), cpuTime()-cpu0
	if srv1, ok := meterOrZero(ctx, b.meter); ok && srvOK {
		res.dbCPU, res.hasDBCPU = srv1-srv0, true
	}
	if err := seen.check(); err != nil {
		return res, err
	}
	st, err := js.Stream(ctx, scfg.Stream)
	if err != nil {
		return res, err
	}
	err = eventually(ctx, 5*time.Second, func() error {
		info, err := st.Info(ctx)
		if err == nil && info.State.Msgs != 0 {
			err = fmt.Errorf("raw: %d messages left in the stream after all were acked", info.State.Msgs)
		}
		return err
	})
	return res, err
}

// meterOrZero reads meter, which may be nil.
func meterOrZero(ctx context.Context, meter cpuMeter) (time.Duration, bool) {
	if meter == nil {
		return 0, false
	}
	return meter(ctx)
}

// eventually calls check until it returns nil or within has passed, and
// returns its last error.
func eventually(ctx context.Context, within time.Duration, check func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := check()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

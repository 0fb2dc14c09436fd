package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/peonify/peonify/streams/amqpstream"
)

// amqpBroker runs Peonify (amqpstream) and the raw consume-and-ack
// ceiling on one RabbitMQ broker. Every run gets connections and queues of
// its own (classic durable queues, persistent messages), deleted
// afterwards.
type amqpBroker struct {
	url      string
	admin    *amqp.Connection // set-up, checks and clean-up
	log      *slog.Logger
	prefetch int // -prefetch, 0 to derive it
	meter    cpuMeter
}

func dialAMQP(_ context.Context, url string, log *slog.Logger, prefetch int) (*amqpBroker, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return nil, fmt.Errorf("connect to rabbitmq (set -amqp-url or PEONIFY_TEST_AMQP_URL): %w", err)
	}
	return &amqpBroker{url: url, admin: conn, log: log, prefetch: prefetch, meter: procCPUByName("beam.smp")}, nil
}

func (b *amqpBroker) describe() string {
	version, _ := b.admin.Properties["version"].(string)
	cpu := "server CPU read from /proc (beam.smp)"
	if b.meter == nil {
		cpu = "server CPU not measured (no local beam.smp process)"
	}
	return fmt.Sprintf("amqp: RabbitMQ %s at %s, classic durable queues, persistent messages; "+
		"connections and queues of its own per run; %s", version, b.admin.RemoteAddr(), cpu)
}

func (b *amqpBroker) close() { _ = b.admin.Close() }

// prefetchFor is the prefetch count of Peonify's stream and of the raw
// loop: -prefetch, or all that a processor with cfg holds (its workers
// and its local queue).
func (b *amqpBroker) prefetchFor(cfg peonifyConfig) int {
	if b.prefetch > 0 {
		return b.prefetch
	}
	return min(cfg.Workers+cfg.QueueSize, 65535)
}

func (b *amqpBroker) fetchNote(cfg peonifyConfig) string {
	return fmt.Sprintf("prefetch: %d for both (amqpstream Config.Prefetch and the raw loop's Qos)", b.prefetchFor(cfg))
}

func (b *amqpBroker) peonify(cfg peonifyConfig) contender {
	prefetch := b.prefetchFor(cfg)
	return contender{name: "peonify", config: fmt.Sprintf("%s, amqpstream Prefetch %d", cfg, prefetch),
		make: func(ctx context.Context, e *env, rec *recorder) (system, error) {
			queue := randName("pbench.")
			st, err := amqpstream.New(b.url, amqpstream.Config{Queue: queue, Prefetch: prefetch, Logger: e.log})
			if err != nil {
				return nil, err
			}
			verify := func(ctx context.Context, n int) error {
				// Run closed the stream: a message still unacked would be
				// back in the queue.
				return eventually(ctx, 5*time.Second, func() error { return b.checkEmpty(queue, true) })
			}
			cleanup := func() { b.deleteQueues(queue) }
			return newBrokerPeonify(cfg, e, rec, st, b.meter, verify, cleanup)
		}}
}

// checkEmpty checks that queue, and its dead-letter queue if dead is set,
// hold no message.
func (b *amqpBroker) checkEmpty(queue string, dead bool) error {
	ch, err := b.admin.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	names := []string{queue}
	if dead {
		names = append(names, queue+".dead")
	}
	for _, name := range names {
		q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
		if err != nil {
			return fmt.Errorf("inspect queue %s: %w", name, err)
		}
		if q.Messages != 0 {
			return fmt.Errorf("queue %s holds %d messages after all tasks were acked", name, q.Messages)
		}
	}
	return nil
}

// deleteQueues deletes a stream's queues: the work queue, its dead-letter
// queue and its delay queues (amqpstream names them queue.delay.<ms>, for
// powers of two of milliseconds up to 2^31).
func (b *amqpBroker) deleteQueues(queue string) {
	ch, err := b.admin.Channel()
	if err != nil {
		b.log.Error("bench: deleting rabbitmq queues", "queue", queue, "err", err)
		return
	}
	defer ch.Close()
	names := []string{queue, queue + ".dead"}
	for e := range 32 {
		names = append(names, queue+".delay."+strconv.FormatInt(int64(1)<<e, 10))
	}
	for _, name := range names {
		if _, err := ch.QueueDelete(name, false, false, false); err != nil {
			b.log.Error("bench: deleting rabbitmq queue", "queue", name, "err", err)
			return
		}
	}
}

func (b *amqpBroker) peers(map[string]bool) (tuned, once []contender) { return nil, nil }

// raw drains n messages, stored by amqpstream, with the plain consume loop
// written directly on amqp091-go: Qos with the same prefetch as Peonify's
// stream, Consume with manual acks, and an Ack of each message.
func (b *amqpBroker) raw(ctx context.Context, n int, cfg peonifyConfig) (result, error) {
	prefetch := b.prefetchFor(cfg)
	res := result{mode: "drain", system: rawLabel("amqp"), n: n,
		config: fmt.Sprintf("Qos(%d), Consume, JSON decode + Ack of each message", prefetch)}
	queue := randName("pbench.")
	defer b.deleteQueues(queue)
	producer, err := amqpstream.New(b.url, amqpstream.Config{Queue: queue, Logger: b.log})
	if err != nil {
		return res, err
	}
	if err := enqueueAndClose(ctx, producer, n); err != nil {
		return res, err
	}
	conn, err := amqp.Dial(b.url)
	if err != nil {
		return res, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return res, err
	}
	if err := ch.Qos(prefetch, 0, false); err != nil {
		return res, err
	}
	seen := newSeenSet(n)

	t0, cpu0 := time.Now(), cpuTime()
	srv0, srvOK := meterOrZero(ctx, b.meter)
	deliveries, err := ch.Consume(queue, "pbench-raw", false, false, false, false, nil)
	if err != nil {
		return res, err
	}
	stall := time.NewTimer(time.Minute)
	defer stall.Stop()
	for got := 0; got < n; got++ {
		var d amqp.Delivery
		var ok bool
		select {
		case d, ok = <-deliveries:
		case <-stall.C:
			return res, fmt.Errorf("raw: only %d of %d messages came within a minute", got, n)
		case <-ctx.Done():
			return res, ctx.Err()
		}
		if !ok {
			return res, errors.New("raw: the broker closed the consumer")
		}
		seen.add(d.Body)
		if err := d.Ack(false); err != nil {
			return res, fmt.Errorf("raw: ack: %w", err)
		}
	}
	res.elapsed, res.cpu = time.Since(t0), cpuTime()-cpu0
	if srv1, ok := meterOrZero(ctx, b.meter); ok && srvOK {
		res.dbCPU, res.hasDBCPU = srv1-srv0, true
	}
	if err := ch.Close(); err != nil {
		return res, err
	}
	if err := seen.check(); err != nil {
		return res, err
	}
	return res, eventually(ctx, 5*time.Second, func() error { return b.checkEmpty(queue, false) })
}

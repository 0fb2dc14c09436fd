package amqpstream

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/peonify/peonify"
)

// The AMQP headers the stream reads and writes. Every other header is a
// Task header. README.md documents them for producers in other languages.
const (
	headerPrefix      = "x-peonify-"
	headerAttempts    = "x-peonify-attempts"     // attempts counted so far; absent means 0
	headerMaxAttempts = "x-peonify-max-attempts" // Task.MaxAttempts; absent means 0
	headerPriority    = "x-peonify-priority"     // Task.Priority; absent means the AMQP priority
	headerRunAt       = "x-peonify-run-at"       // not delivered before this time, in Unix milliseconds
	headerLastError   = "x-peonify-last-error"   // error of the last failed attempt
	headerUniqueKey   = "x-peonify-unique-key"   // Task.UniqueKey, carried but not enforced
	headerDeadReason  = "x-peonify-dead-reason"  // why the task was dead-lettered
	headerDeadAt      = "x-peonify-dead-at"      // when, in Unix milliseconds

	// headerKey is Task.Key: peonify.KeyHeader, the header every raw
	// producer can set, read in any case. It is not a Task header.
	headerKey = peonify.KeyHeader
)

// brokerHeader reports whether RabbitMQ sets the header itself (dead
// lettering, quorum queue delivery counts). Such headers are not task
// headers, and a republished task drops them.
func brokerHeader(k string) bool {
	switch k {
	case "x-death", "x-delivery-count", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
		"x-last-death-exchange", "x-last-death-queue", "x-last-death-reason":
		return true
	}
	return false
}

// reservedHeader reports whether a task may not carry the header, because
// the stream or the broker owns it, or it is Task.Key.
func reservedHeader(k string) bool {
	return strings.HasPrefix(k, headerPrefix) || brokerHeader(k) || isKeyHeader(k)
}

// isKeyHeader reports whether k is headerKey, in any case.
func isKeyHeader(k string) bool { return strings.EqualFold(k, headerKey) }

// meta is what the stream reads from a message's headers to decide what to
// do with it.
type meta struct {
	attempts int       // attempts counted before this delivery
	runAt    time.Time // zero: due now
}

func readMeta(h amqp.Table) meta {
	var m meta
	if n, ok := intHeader(h[headerAttempts]); ok && n > 0 {
		m.attempts = int(min(n, math.MaxInt32))
	}
	if ms, ok := intHeader(h[headerRunAt]); ok && ms > 0 {
		m.runAt = time.UnixMilli(ms)
	}
	return m
}

// decodeTask turns a message into a task. It never fails: a message from
// another producer that lacks a field gets its zero value (a missing
// message_id gets a new ID, see README.md), and malformed headers are
// ignored, so that the processor can still run or dead-letter the task.
func decodeTask(d *amqp.Delivery) *peonify.Task {
	m := readMeta(d.Headers)
	t := &peonify.Task{
		ID:         d.MessageId,
		Type:       d.Type,
		Payload:    d.Body,
		Attempt:    m.attempts + 1,
		Priority:   int(d.Priority),
		EnqueuedAt: d.Timestamp,
		RunAt:      m.runAt,
	}
	if t.ID == "" {
		t.ID = peonify.NewID()
	}
	if t.Payload == nil {
		t.Payload = []byte{}
	}
	for k, v := range d.Headers {
		switch k {
		case headerMaxAttempts:
			if n, ok := intHeader(v); ok && n > 0 {
				t.MaxAttempts = int(min(n, math.MaxInt32))
			}
		case headerPriority:
			if n, ok := intHeader(v); ok {
				t.Priority = int(max(min(n, math.MaxInt32), math.MinInt32))
			}
		case headerUniqueKey:
			t.UniqueKey = stringHeader(v)
		case headerLastError:
			t.LastError = stringHeader(v)
		case headerKey:
			// Spelled as the stream writes it: it wins over other spellings.
			if key := stringHeader(v); len(key) <= peonify.MaxKeyLen {
				t.Key = key
			}
		default:
			if isKeyHeader(k) {
				// Another spelling; kept unless the exact one is there.
				if _, exact := d.Headers[headerKey]; !exact {
					if key := stringHeader(v); len(key) <= peonify.MaxKeyLen {
						t.Key = key
					}
				}
				continue
			}
			if reservedHeader(k) {
				continue
			}
			if t.Headers == nil {
				t.Headers = make(map[string]string, len(d.Headers))
			}
			t.Headers[k] = stringHeader(v)
		}
	}
	return t
}

// intHeader reads an integer header written by any client: AMQP has several
// integer types, and some clients send numbers as strings or floats.
func intHeader(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case int32:
		return int64(n), true
	case int16:
		return int64(n), true
	case int8:
		return int64(n), true
	case int:
		return int64(n), true
	case uint8:
		return int64(n), true
	case uint16:
		return int64(n), true
	case uint32:
		return int64(n), true
	case uint64:
		if n > math.MaxInt64 {
			return 0, false
		}
		return int64(n), true
	case float64:
		if n != n || n > math.MaxInt64 || n < math.MinInt64 {
			return 0, false
		}
		return int64(n), true
	case float32:
		return intHeader(float64(n))
	case string:
		i, err := strconv.ParseInt(strings.TrimSpace(n), 10, 64)
		return i, err == nil
	case []byte:
		return intHeader(string(n))
	}
	return 0, false
}

// stringHeader renders any header value as a task header string: strings
// and bytes as they are, numbers and booleans in decimal, times in
// RFC 3339, tables and arrays as JSON.
func stringHeader(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	case nil:
		return ""
	case bool, int, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64:
		return fmt.Sprint(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339)
	case amqp.Decimal:
		return fmt.Sprintf("%de-%d", x.Value, x.Scale)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// encodeTask builds the message that stores t. attempts is the number of
// attempts already counted. maxPriority, when positive, is the work
// queue's x-max-priority: the AMQP priority is Task.Priority clamped to
// 0..maxPriority.
func encodeTask(t *peonify.Task, attempts, maxPriority int) amqp.Publishing {
	h := make(amqp.Table, len(t.Headers)+6)
	for k, v := range t.Headers {
		h[k] = v
	}
	setMeta(h, t, attempts)
	return amqp.Publishing{
		MessageId:    t.ID,
		Type:         t.Type,
		Body:         t.Payload,
		Headers:      h,
		Timestamp:    t.EnqueuedAt,
		DeliveryMode: amqp.Persistent,
		Priority:     amqpPriority(t.Priority, maxPriority),
	}
}

// setMeta writes the task fields that live in headers.
func setMeta(h amqp.Table, t *peonify.Task, attempts int) {
	setInt := func(k string, v int64) {
		if v != 0 {
			h[k] = v
		} else {
			delete(h, k)
		}
	}
	setStr := func(k, v string) {
		if v != "" {
			h[k] = v
		} else {
			delete(h, k)
		}
	}
	setInt(headerAttempts, int64(attempts))
	setInt(headerMaxAttempts, int64(t.MaxAttempts))
	setInt(headerPriority, int64(t.Priority))
	var runAt int64
	if !t.RunAt.IsZero() {
		// Round up: the header has milliseconds, and a task is never
		// early, not even by the fraction cut off.
		runAt = max(t.RunAt.Add(time.Millisecond-1).UnixMilli(), 1)
	}
	setInt(headerRunAt, runAt)
	setStr(headerUniqueKey, t.UniqueKey)
	for k := range h {
		if isKeyHeader(k) && k != headerKey {
			delete(h, k) // a producer's other spelling, replaced by t.Key
		}
	}
	setStr(headerKey, t.Key)
	setStr(headerLastError, peonify.TruncateReason(t.LastError))
}

// repost builds the message that carries a delivered task on (a retry, a
// release, a dead letter, a delay hop): the original message with its
// task headers rewritten. Properties that other producers set
// (content_type, correlation_id, reply_to, app_id, their own headers) are
// kept; the broker's dead-lettering headers, the per-message expiration
// and user_id (which the broker checks against the connection's user) are
// dropped.
func repost(d *amqp.Delivery, t *peonify.Task, attempts, maxPriority int) amqp.Publishing {
	h := make(amqp.Table, len(d.Headers)+2)
	for k, v := range d.Headers {
		if !brokerHeader(k) {
			h[k] = v
		}
	}
	setMeta(h, t, attempts)
	return amqp.Publishing{
		Headers:         h,
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		DeliveryMode:    amqp.Persistent,
		Priority:        amqpPriority(t.Priority, maxPriority),
		CorrelationId:   d.CorrelationId,
		ReplyTo:         d.ReplyTo,
		MessageId:       t.ID,
		Timestamp:       d.Timestamp,
		Type:            d.Type,
		AppId:           d.AppId,
		Body:            d.Body,
	}
}

func amqpPriority(p, maxPriority int) uint8 {
	if maxPriority <= 0 {
		return 0
	}
	return uint8(max(min(p, maxPriority), 0))
}

// validateHeaders rejects task headers that cannot round-trip through AMQP.
func validateHeaders(t *peonify.Task) error {
	for k := range t.Headers {
		switch {
		case k == "":
			return &peonify.InvalidTaskError{ID: t.ID, Reason: "a header name is empty"}
		case len(k) > peonify.MaxHeaderNameLen:
			return &peonify.InvalidTaskError{ID: t.ID, Reason: fmt.Sprintf("header name %q is longer than %d bytes, the AMQP limit", k[:32]+"…", peonify.MaxHeaderNameLen)}
		case isKeyHeader(k):
			return &peonify.InvalidTaskError{ID: t.ID, Reason: "header name " + strconv.Quote(k) +
				" is the task's key: set Task.Key instead"}
		case reservedHeader(k):
			return &peonify.InvalidTaskError{ID: t.ID, Reason: "header name " + strconv.Quote(k) +
				" is reserved: names starting with x-peonify- belong to the stream, and x-death, x-first-death-*, x-last-death-* and x-delivery-count to RabbitMQ"}
		}
	}
	return nil
}

// Delays. A retry or a scheduled task waits in delay queues: each has one
// fixed x-message-ttl, a power of two of milliseconds, and dead-letters
// its expired messages back to the work queue. One queue per TTL keeps
// each queue first-in first-out, so messages expire on time (RabbitMQ
// expires messages only at the head of a queue). A delay is covered by one
// or a few hops: the longest bucket that does not overshoot, then, when
// the message comes back to the work queue before its run-at time, the
// next one for what is left. The result is never early, and late by at
// most a few milliseconds per hop (or by the time it queues behind a
// backlog in the work queue, as every ready task does).
const (
	maxBucketExp = 31 // the longest bucket: 2^31 ms, about 24.9 days
	maxBucket    = int64(1) << maxBucketExp
)

// bucketFor returns the TTL in milliseconds of the delay queue for a task
// due in remaining, or 0 if it is due now. When the next power of two is
// only a little longer than remaining (by at most 1/16 of it, and at most
// 100ms), that one is used, which saves the last hops for a small
// lateness.
func bucketFor(remaining time.Duration) int64 {
	ms := (remaining + time.Millisecond - 1).Milliseconds() // round up: never early
	if ms <= 0 {
		return 0
	}
	if ms >= maxBucket {
		return maxBucket
	}
	lo := int64(1)
	for lo*2 <= ms {
		lo *= 2
	}
	if lo == ms {
		return lo
	}
	if hi := lo * 2; hi-ms <= min(ms/16, 100) {
		return hi
	}
	return lo
}

// delayQueue returns the name of the delay queue with TTL ms.
func delayQueue(queue string, ms int64) string {
	return queue + ".delay." + strconv.FormatInt(ms, 10)
}

// deadQueue returns the name of the dead-letter queue.
func deadQueue(queue string) string { return queue + ".dead" }

// allDelayQueues lists every delay queue name the stream may use.
func allDelayQueues(queue string) []string {
	names := make([]string, 0, maxBucketExp+1)
	for e := 0; e <= maxBucketExp; e++ {
		names = append(names, delayQueue(queue, int64(1)<<e))
	}
	return names
}

// Package peonify is a background task processor.
//
// A Processor holds a bounded local queue of tasks that this process will
// attempt, and a pool of workers that run them. Streams feed tasks in from
// any source: an embedded durable store, a database, a message broker, an
// HTTP webhook. A TaskList maps each task type to the Handler that executes
// it. Delivery is at-least-once: a task may run more than once, so handlers
// are idempotent and the task ID is the idempotency key.
package peonify

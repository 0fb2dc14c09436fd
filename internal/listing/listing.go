// Package listing builds one page of Inspector.List for streams that
// look at their tasks in memory (a broker read message by message, a map
// of claims): the tasks whose ID sorts after ListOptions.After, of
// ListOptions.Type and ListOptions.Key when they are set, the Limit
// smallest IDs in ID order.
package listing

import (
	"slices"
	"strings"

	"github.com/peonify/peonify"
)

// Page collects the items of one page. It keeps at most a few times Limit
// items however many are added, so a stream can feed it a whole queue.
// It is not safe for concurrent use.
type Page[T any] struct {
	opts  peonify.ListOptions
	task  func(T) *peonify.Task
	items []T
}

// New returns an empty page for opts, which must be normalized (see
// peonify.ListOptions.Normalize); task returns the task of an item.
func New[T any](opts peonify.ListOptions, task func(T) *peonify.Task) *Page[T] {
	return &Page[T]{opts: opts, task: task}
}

// Infos returns an empty page of TaskInfo values for opts, which must be
// normalized.
func Infos(opts peonify.ListOptions) *Page[peonify.TaskInfo] {
	return New(opts, func(ti peonify.TaskInfo) *peonify.Task { return &ti.Task })
}

// Add adds x if its task belongs on the page: its ID sorts after After
// and it has the Type and the Key asked for, if any.
func (p *Page[T]) Add(x T) {
	t := p.task(x)
	if t.ID <= p.opts.After || (p.opts.Type != "" && t.Type != p.opts.Type) || (p.opts.Key != "" && t.Key != p.opts.Key) {
		return
	}
	p.items = append(p.items, x)
	if len(p.items) >= 4*p.opts.Limit {
		p.trim()
	}
}

// Full reports whether the page holds Limit items: a stream that adds
// items in ID order can stop.
func (p *Page[T]) Full() bool { return len(p.items) >= p.opts.Limit }

// Items returns the page: at most Limit items, ordered by task ID.
func (p *Page[T]) Items() []T {
	p.trim()
	return p.items
}

// trim sorts the items by task ID and keeps the first Limit.
func (p *Page[T]) trim() {
	slices.SortFunc(p.items, func(a, b T) int { return strings.Compare(p.task(a).ID, p.task(b).ID) })
	if len(p.items) > p.opts.Limit {
		clear(p.items[p.opts.Limit:])
		p.items = p.items[:p.opts.Limit]
	}
}

package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"unicode"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
)

// limitEntry is one entry of the limits section: a peonify.Limit that a
// store enforces in its claims. Its fields carry the Go names of
// peonify.Limit.
type limitEntry struct {
	Name           string         `yaml:"name"`            // defaults to the type ("*" for every type), then /key or /local
	Stream         string         `yaml:"stream"`          // the store; required when there are several
	Type           string         `yaml:"type"`            // the task type; default every type
	PerKey         bool           `yaml:"per_key"`         // apply to each task key separately
	Concurrency    int            `yaml:"concurrency"`     // most running at once (per key with per_key); 0: none
	KeyConcurrency map[string]int `yaml:"key_concurrency"` // per_key: concurrency of named keys; 0 holds a key
	Rate           yamlfile.Rate  `yaml:"rate"`            // most starts per period: 20/s, 600/m, 5/10s
	Burst          int            `yaml:"burst"`           // starts at once after a quiet spell; default 1
	Ordered        bool           `yaml:"ordered"`         // per_key: one at a time, in enqueue order
	Fair           bool           `yaml:"fair"`            // per_key: round-robin between keys only
	Local          bool           `yaml:"local"`           // count this processor's tasks only
}

// limit returns the entry as a peonify.Limit.
func (le *limitEntry) limit() peonify.Limit {
	return peonify.Limit{Name: le.Name, Type: le.Type, PerKey: le.PerKey, Concurrency: le.Concurrency,
		KeyConcurrency: le.KeyConcurrency, Rate: le.Rate.N, Period: le.Rate.Per, Burst: le.Burst,
		Ordered: le.Ordered, Fair: le.Fair, Local: le.Local}
}

// checkLimits validates the limits section against the streams and task
// types, and groups the limits by the store that enforces them.
func (c *config) checkLimits(entries []limitEntry) error {
	stores := c.storeNames()
	c.limits = make(map[string][]peonify.Limit)
	where := make(map[string]map[string]int) // stream -> limit name -> entry index
	for i := range entries {
		le := &entries[i]
		path := fmt.Sprintf("limits[%d]", i)
		if err := le.check(path); err != nil {
			return err
		}
		if le.Type != "" {
			if _, ok := c.tasks[le.Type]; !ok {
				return yamlfile.Errorf(path+".type", "%q is not a task type of this file (tasks: %s); leave type out to limit every type",
					le.Type, yamlfile.QuoteList(yamlfile.SortedKeys(c.tasks)))
			}
		}
		if le.Stream == "" {
			if len(stores) != 1 {
				return yamlfile.Errorf(path+".stream", "required when there are several stores: name the store whose claims the limit holds back (%s)", yamlfile.QuoteList(stores))
			}
			le.Stream = stores[0]
		}
		switch s := c.stream(le.Stream); s.(type) {
		case nil:
			return yamlfile.Errorf(path+".stream", "%q is not the name of a stream (stores: %s)", le.Stream, yamlfile.QuoteList(stores))
		case intakeSpec:
			return yamlfile.Errorf(path+".stream", "%q is a %s intake, which stores into another stream: name the store its tasks go to (%s)", le.Stream, s.common().Kind, yamlfile.QuoteList(stores))
		default:
			if k, _ := kindNamed(s.common().Kind); !k.limits {
				return yamlfile.Errorf(path+".stream", "%q is of kind %s, which cannot enforce limits: limits are enforced in the claims of %s stores",
					le.Stream, k.name, orList(limitKinds()))
			}
		}
		l, err := le.limit().Normalize()
		if err != nil {
			var ce *peonify.ConfigError
			if errors.As(err, &ce) {
				return yamlfile.Errorf(path, "%s", ce.Reason)
			}
			return yamlfile.Errorf(path, "%v", err)
		}
		if where[le.Stream] == nil {
			where[le.Stream] = make(map[string]int)
		}
		if j, dup := where[le.Stream][l.Name]; dup {
			field := ".name"
			if le.Name == "" {
				field = ""
			}
			return yamlfile.Errorf(path+field, "limits[%d] of stream %q has the name %q too: give each limit of a store its own name", j, le.Stream, l.Name)
		}
		where[le.Stream][l.Name] = i
		c.limits[le.Stream] = append(c.limits[le.Stream], l)
	}
	return nil
}

// limitCount returns the number of limits of the file, over every store.
func (c *config) limitCount() int {
	n := 0
	for _, ls := range c.limits {
		n += len(ls)
	}
	return n
}

// check validates the fields of one entry, at path, with the file's names
// for them (peonify.Limit.Validate names the Go fields).
func (le *limitEntry) check(path string) error {
	at := func(field string) string { return path + "." + field }
	switch {
	case len(le.Type) > peonify.MaxTypeLen:
		return yamlfile.Errorf(at("type"), "is longer than %d bytes", peonify.MaxTypeLen)
	case le.Concurrency < 0:
		return yamlfile.Errorf(at("concurrency"), "must not be negative (0 means no concurrency limit)")
	case le.Burst < 0:
		return yamlfile.Errorf(at("burst"), "must not be negative (0 means 1)")
	case le.Burst > 0 && le.Rate.N == 0:
		return yamlfile.Errorf(at("burst"), "is set without a rate: set rate, the most starts per period (e.g. rate: 20/s)")
	case le.Concurrency == 0 && le.Rate.N == 0 && !le.Ordered && !le.Fair && len(le.KeyConcurrency) == 0:
		return yamlfile.Errorf(path, "limits nothing: set concurrency, rate, ordered or fair")
	case le.Fair && !le.PerKey:
		return yamlfile.Errorf(at("fair"), "is set without per_key: fairness is between the keys of tasks, so set per_key: true")
	case len(le.KeyConcurrency) > 0 && !le.PerKey:
		return yamlfile.Errorf(at("key_concurrency"), "is set without per_key: set per_key: true to limit each key")
	case le.Ordered && !le.PerKey:
		return yamlfile.Errorf(at("ordered"), "is set without per_key: ordering is per key, so set per_key: true")
	case le.Ordered && (le.Concurrency > 1 || len(le.KeyConcurrency) > 0):
		return yamlfile.Errorf(at("ordered"), "runs one task per key at a time: drop concurrency and key_concurrency")
	case le.Local && (le.Rate.N > 0 || le.Ordered || le.Fair || le.PerKey):
		return yamlfile.Errorf(at("local"), "applies to a concurrency per type only: rates, ordering and keys hold across processors, so drop rate, ordered, fair and per_key, or local")
	}
	for _, k := range yamlfile.SortedKeys(le.KeyConcurrency) {
		n := le.KeyConcurrency[k]
		kp := fmt.Sprintf("%s[%q]", at("key_concurrency"), k)
		switch {
		case k == "":
			return yamlfile.Errorf(at("key_concurrency"), "has an empty key: tasks without a key are not limited per key")
		case len(k) > peonify.MaxKeyLen:
			return yamlfile.Errorf(kp, "the key is longer than %d bytes", peonify.MaxKeyLen)
		case n < 0:
			return yamlfile.Errorf(kp, "must not be negative: use 0 to hold the key, or the most of its tasks that run at once")
		}
	}
	return nil
}

// orList formats names as "a, b or c".
func orList(names []string) string {
	switch len(names) {
	case 0:
		return ""
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// describeLimit says in a few words what a normalized limit does:
// "1 at once per key (acme: 10)", "20/s burst 5", "one at a time per key,
// in order".
func describeLimit(l peonify.Limit) string {
	perKey := ""
	if l.PerKey {
		perKey = " per key"
	}
	var parts []string
	switch {
	case l.Ordered:
		parts = append(parts, "one at a time per key, in order")
	case l.Concurrency > 0 && l.Local:
		parts = append(parts, fmt.Sprintf("%d at once in each processor", l.Concurrency))
	case l.Concurrency > 0:
		parts = append(parts, fmt.Sprintf("%d at once%s", l.Concurrency, perKey))
	case len(l.KeyConcurrency) > 0:
		parts = append(parts, "no limit per key")
	}
	if len(l.KeyConcurrency) > 0 {
		var ks []string
		for _, k := range yamlfile.SortedKeys(l.KeyConcurrency) {
			ks = append(ks, fmt.Sprintf("%s: %d", showKey(k), l.KeyConcurrency[k]))
		}
		parts[len(parts)-1] += " (" + strings.Join(ks, ", ") + ")"
	}
	if l.Rate > 0 {
		parts = append(parts, fmt.Sprintf("%s burst %d%s", yamlfile.Rate{N: l.Rate, Per: l.Period}, l.Burst, perKey))
	}
	if len(parts) == 0 {
		return "fair between keys"
	}
	return strings.Join(parts, ", ")
}

func (c *cli) tasksLimits(cmd *command, args []string) error {
	fs, f := newInspectFlags(cmd)
	if err := c.parseFlags(cmd, fs, args); err != nil {
		return err
	}
	if f.config == "" {
		return usagef("limits are set by the limits section of a config file: give it with -c peonify.yaml [--stream NAME]")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	st, err := f.resolve(c, true)
	if err != nil {
		return err
	}
	name := st.spec.common().Name
	limits := st.cfg.limits[name]
	if len(limits) == 0 {
		st.r.close()
		if f.json {
			return c.printJSON([]limitJSON{})
		}
		fmt.Fprintf(c.stderr, "no limits: the limits section of %s gives stream %q none\n", f.config, name)
		return nil
	}
	if err := st.open(ctx); err != nil {
		return err
	}
	defer st.close()
	lim, ok := peonify.As[peonify.Limiter](st.stream)
	if !ok {
		return fmt.Errorf("the %s cannot report its limits: this build's %s store does not enforce limits", st.desc, st.spec.common().Kind)
	}
	if err := lim.SetLimits(limits); err != nil {
		return err
	}
	stats, err := lim.LimitStats(ctx)
	if err != nil {
		return fmt.Errorf("reading the limits of the %s: %w", st.desc, err)
	}
	out := limitsJSON(limits, stats)
	if f.json {
		return c.printJSON(out)
	}
	return writeLimits(c.stdout, out)
}

// limitJSON is a limit with its stats, in `tasks limits` output.
type limitJSON struct {
	Name    string    `json:"name"`
	Type    string    `json:"type,omitempty"` // empty: every type
	PerKey  bool      `json:"per_key,omitempty"`
	Local   bool      `json:"local,omitempty"` // in_use counts this process's tasks: none
	Rule    string    `json:"rule"`            // what the limit does, in words
	InUse   int       `json:"in_use"`
	Waiting int       `json:"waiting"`
	Keys    []keyJSON `json:"keys,omitempty"` // the busiest keys of a per-key limit
}

// keyJSON is one key's use of a per-key limit.
type keyJSON struct {
	Key     string `json:"key"`
	InUse   int    `json:"in_use"`
	Waiting int    `json:"waiting"`
}

// limitsJSON joins the limits with their stats, by name, in the limits'
// order; a limit the store reported nothing for shows zeros.
func limitsJSON(limits []peonify.Limit, stats []peonify.LimitStat) []limitJSON {
	byName := make(map[string]peonify.LimitStat, len(stats))
	for _, s := range stats {
		byName[s.Name] = s
	}
	out := make([]limitJSON, 0, len(limits))
	for _, l := range limits {
		s := byName[l.Name]
		lj := limitJSON{Name: l.Name, Type: l.Type, PerKey: l.PerKey, Local: l.Local, Rule: describeLimit(l), InUse: s.InUse, Waiting: s.Waiting}
		for _, k := range s.Keys {
			lj.Keys = append(lj.Keys, keyJSON(k))
		}
		out = append(out, lj)
	}
	return out
}

// writeLimits prints the limits as a table, each per-key limit followed
// by its busiest keys.
func writeLimits(w io.Writer, limits []limitJSON) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LIMIT\tTYPE\tRULE\tIN USE\tWAITING")
	for _, l := range limits {
		inUse := strconv.Itoa(l.InUse)
		if l.Local {
			inUse = "-" // a local limit counts each processor's own tasks, and this process runs none
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", l.Name, cmp.Or(l.Type, "(every type)"), l.Rule, inUse, l.Waiting)
		for _, k := range l.Keys {
			fmt.Fprintf(tw, "  key %s\t\t\t%d\t%d\n", showKey(k.Key), k.InUse, k.Waiting)
		}
	}
	return tw.Flush()
}

// showKey returns a key for a table: as it is, or quoted when it has
// spaces or characters that are not printable; shortened when long.
func showKey(k string) string {
	if k == "" || strings.ContainsFunc(k, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) || r == '"' }) {
		k = strconv.Quote(k)
	}
	return oneLine(k, 60)
}

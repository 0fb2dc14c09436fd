package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
)

const storeHelp = `STORE is --store FILE (a SQLite store), --postgres URL [--queue Q],
--redis URL [--queue Q], --nats URL [--nats-stream S], --amqp URL [--queue Q],
or -c peonify.yaml [--stream NAME].`

func tasksCommand() *command {
	return &command{
		name:    "tasks",
		summary: "inspect a store's tasks; retry, cancel, wait for, delete or purge them",
		usage:   "tasks stats|list|show|get|retry|cancel|wait|delete|purge|limits [flags] STORE",
		about: `Tasks looks at the tasks of a store and repairs them:

  stats    count the tasks in each state
  list     list tasks, by state and type
  show     show one task, with its payload, last error, progress, result
           and workflow (get is the same)
  retry    make dead tasks pending again, with a fresh attempt count
  cancel   cancel tasks that have not finished (and their workflow dependents)
  wait     wait until a task finishes and print its result
  delete   remove tasks that are not running
  purge    remove every task in a state (dead, done, cancelled or pending)
  limits   show each flow-control limit of a config file's store: tasks in
           use, waiting, and the busiest keys

Every subcommand takes --json for output that programs can read.

` + storeHelp + `

Run 'peonify tasks <subcommand> --help' for its flags.`,
		example: `peonify tasks stats --store peonify.db
peonify tasks list --state dead --store peonify.db
peonify tasks show 0194d3c2-7a4e-7b1c-9f00-2b6a4c1d9e11 --store peonify.db
peonify tasks retry --all --store peonify.db
peonify tasks limits -c peonify.yaml`,
		run: (*cli).tasks,
	}
}

// taskSubcommands lists the subcommands of tasks.
func taskSubcommands() []*command {
	return []*command{
		{name: "tasks stats", usage: "tasks stats [--json] STORE", run: (*cli).tasksStats,
			about: "Stats counts the store's tasks in each state.\n\n" + storeHelp,
			example: `peonify tasks stats --store peonify.db
peonify tasks stats --postgres "$DATABASE_URL" --queue emails --json`},
		{name: "tasks list", usage: "tasks list [--state S] [--type T] [--key K] [--limit N] [--after ID] [--json] STORE", run: (*cli).tasksList,
			about: "List lists tasks ordered by ID (which is creation order for generated IDs),\nin one state or, by default, in every state. With --key it lists the tasks\nof one flow-control key: what waits behind a per-key limit.\n\n" + storeHelp,
			example: `peonify tasks list --state dead --store peonify.db
peonify tasks list --state pending --type email --limit 10 --store peonify.db
peonify tasks list --state pending --key acme -c peonify.yaml`},
		{name: "tasks show", usage: "tasks show [--json] ID STORE", run: (*cli).tasksShow,
			about:   showAbout + storeHelp,
			example: `peonify tasks show welcome-42 --store peonify.db`},
		{name: "tasks get", usage: "tasks get [--json] ID STORE", run: (*cli).tasksShow,
			about:   "Get is show: " + showAbout + storeHelp,
			example: `peonify tasks get welcome-42 --store peonify.db --json`},
		{name: "tasks retry", usage: "tasks retry [--json] (ID... | --all) STORE", run: (*cli).tasksRetry,
			about: "Retry makes dead tasks pending again with a fresh attempt count.\n\n" + storeHelp,
			example: `peonify tasks retry welcome-42 invoice-7 --store peonify.db
peonify tasks retry --all --store peonify.db`},
		{name: "tasks cancel", usage: "tasks cancel [--json] ID... STORE", run: (*cli).tasksCancel,
			about:   "Cancel cancels tasks that have not finished: waiting, pending and scheduled\ntasks never run, and a running task is stopped when its processor next\nextends its lease (within a third of the lease). Their dependents in a\nworkflow are cancelled too, unless they allow failed parents. It prints\nhow many of the IDs it cancelled; finished and unknown IDs are skipped.\nOnly " + orList(trackKinds()) + " stores can cancel.\n\n" + storeHelp,
			example: `peonify tasks cancel welcome-42 invoice-7 --store peonify.db`},
		{name: "tasks wait", usage: "tasks wait [--timeout D] [--json] ID STORE", run: (*cli).tasksWait,
			about:   "Wait waits until a task finishes. When it is done, wait prints its result\n(the bytes the handler set, as they are; with --json the whole task) and\nexits 0. When it is dead or cancelled, wait says so with its last error and\nexits 3; when --timeout passes first, it exits 4. Only " + orList(trackKinds()) + "\nstores can wait, and a done task is found only if its store kept it (a task\nwith a result or in a workflow is kept for the store's result retention).\n\n" + storeHelp,
			example: `peonify tasks wait report-7 --timeout 5m --store peonify.db > report.json`},
		{name: "tasks delete", usage: "tasks delete [--json] ID... STORE", run: (*cli).tasksDelete,
			about:   "Delete removes tasks that are not running.\n\n" + storeHelp,
			example: `peonify tasks delete welcome-42 --store peonify.db`},
		{name: "tasks purge", usage: "tasks purge --state dead|done|cancelled|pending [--yes] [--json] STORE", run: (*cli).tasksPurge,
			about:   "Purge removes every task in a state. Purging pending tasks empties the queue\nand needs --yes.\n\n" + storeHelp,
			example: `peonify tasks purge --state dead --store peonify.db`},
		{name: "tasks limits", usage: "tasks limits [--json] -c peonify.yaml [--stream NAME]", run: (*cli).tasksLimits,
			about: "Limits shows each limit of the limits section that a store of the config file\nenforces: its rule, how many of its tasks run (in use) and how many are\nready but held back (waiting), and for a per-key limit its busiest keys.\nList what waits on a key with 'peonify tasks list --state pending --key K'.\n\nThe store is -c peonify.yaml [--stream NAME]: the limits are those of the file.",
			example: `peonify tasks limits -c peonify.yaml
peonify tasks limits -c peonify.yaml --stream orders --json`},
	}
}

func (c *cli) tasks(cmd *command, args []string) error {
	return c.dispatch(cmd, args, "tasks", taskSubcommands(), "stats, list, show, get, retry, cancel, wait, delete, purge or limits")
}

// dispatch runs the subcommand of group (tasks, workflows) that args name;
// names lists the subcommands for the usage errors.
func (c *cli) dispatch(cmd *command, args []string, group string, subs []*command, names string) error {
	if len(args) == 0 {
		return usagef("which subcommand? %s", names)
	}
	if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		c.commandHelp(cmd, nil)
		return errHelp
	}
	for _, sub := range subs {
		if sub.name == group+" "+args[0] {
			err := sub.run(c, sub, args[1:])
			var ue *usageError
			if errors.As(err, &ue) {
				return usagef("%s: %s", args[0], ue.msg)
			}
			return err
		}
	}
	return usagef("unknown subcommand %q: use %s", args[0], names)
}

// inspectFlags are the flags every tasks subcommand has.
type inspectFlags struct {
	storeFlags
	json bool
}

// newInspectFlags returns the flag set of a tasks subcommand with the
// flags every one has registered.
func newInspectFlags(cmd *command) (*flag.FlagSet, *inspectFlags) {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	f := new(inspectFlags)
	f.register(fs)
	return fs, f
}

func (f *inspectFlags) register(fs *flag.FlagSet) {
	f.storeFlags.register(fs)
	fs.BoolVar(&f.json, "json", false, "print JSON instead of text")
}

// withStore opens the store of f and runs fn with it, until SIGINT or
// SIGTERM.
func (c *cli) withStore(f *inspectFlags, fn func(ctx context.Context, st *store) error) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	st, err := f.open(ctx, c, true)
	if err != nil {
		return err
	}
	defer st.close()
	return fn(ctx, st)
}

// withInspector opens the store of f and runs fn with its Inspector, until
// SIGINT or SIGTERM.
func (c *cli) withInspector(f *inspectFlags, fn func(ctx context.Context, in peonify.Inspector, st *store) error) error {
	return c.withStore(f, func(ctx context.Context, st *store) error {
		in, err := st.inspector()
		if err != nil {
			return err
		}
		return fn(ctx, in, st)
	})
}

func (c *cli) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = c.stdout.Write(append(b, '\n'))
	return err
}

func (c *cli) tasksStats(cmd *command, args []string) error {
	fs, f := newInspectFlags(cmd)
	if err := c.parseFlags(cmd, fs, args); err != nil {
		return err
	}
	return c.withInspector(f, func(ctx context.Context, in peonify.Inspector, st *store) error {
		counts, err := in.Counts(ctx)
		if err != nil {
			return err
		}
		total := 0
		for _, n := range counts {
			total += n
		}
		if f.json {
			out := map[string]int{"total": total}
			for _, s := range peonify.States {
				out[string(s)] = counts[s]
			}
			return c.printJSON(out)
		}
		width := len(fmt.Sprint(total))
		fmt.Fprintf(c.stdout, "%-10s %*s\n", "STATE", max(width, 5), "TASKS")
		for _, s := range peonify.States {
			fmt.Fprintf(c.stdout, "%-10s %*d\n", s, max(width, 5), counts[s])
		}
		_, err = fmt.Fprintf(c.stdout, "%-10s %*d\n", "total", max(width, 5), total)
		return err
	})
}

// parseState reads a --state flag; "" is allowed when all is.
func parseState(s string, allowed ...peonify.State) (peonify.State, error) {
	for _, a := range allowed {
		if string(a) == s {
			return a, nil
		}
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	return "", usagef("--state %q is not one of %s", s, strings.Join(names, ", "))
}

func (c *cli) tasksList(cmd *command, args []string) error {
	fs, f := newInspectFlags(cmd)
	state := fs.String("state", "", "list only tasks in this `state`: waiting, pending, scheduled, running, dead, cancelled or done (default: all)")
	typ := fs.String("type", "", "list only tasks of this `type`")
	key := fs.String("key", "", "list only tasks of this flow-control `key`")
	limit := fs.Int("limit", 50, "list at most `n` tasks")
	after := fs.String("after", "", "list tasks whose ID sorts after this `ID` (the last one of the previous page), with --state")
	if err := c.parseFlags(cmd, fs, args); err != nil {
		return err
	}
	states := peonify.States
	if *state != "" {
		s, err := parseState(*state, peonify.States...)
		if err != nil {
			return err
		}
		states = []peonify.State{s}
	} else if *after != "" {
		return usagef("--after pages through one state: give --state too")
	}
	if *limit < 1 {
		return usagef("--limit must be at least 1")
	}
	return c.withInspector(f, func(ctx context.Context, in peonify.Inspector, st *store) error {
		var infos []peonify.TaskInfo
		for _, s := range states {
			if len(infos) >= *limit {
				break
			}
			got, err := in.List(ctx, peonify.ListOptions{State: s, Type: *typ, Key: *key, Limit: *limit - len(infos), After: *after})
			if errors.Is(err, errors.ErrUnsupported) && len(states) > 1 {
				// A store that cannot list this state (amqp): list the others.
				fmt.Fprintf(c.stderr, "not listed: %v\n", err)
				continue
			}
			if err != nil {
				return err
			}
			infos = append(infos, got...)
		}
		if f.json {
			out := make([]taskJSON, len(infos))
			for i, ti := range infos {
				out[i] = toJSON(ti, false)
			}
			return c.printJSON(out)
		}
		if len(infos) == 0 {
			if *key != "" {
				fmt.Fprintf(c.stderr, "no tasks of key %q\n", *key)
			} else {
				fmt.Fprintln(c.stderr, "no tasks")
			}
			return nil
		}
		// The key column shows when keys are asked for or used.
		keys := *key != "" || slices.ContainsFunc(infos, func(ti peonify.TaskInfo) bool { return ti.Task.Key != "" })
		now := time.Now()
		tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
		if keys {
			fmt.Fprintln(tw, "ID\tTYPE\tKEY\tSTATE\tATTEMPTS\tUPDATED\tLAST ERROR")
		} else {
			fmt.Fprintln(tw, "ID\tTYPE\tSTATE\tATTEMPTS\tUPDATED\tLAST ERROR")
		}
		for _, ti := range infos {
			typ := ti.Task.Type
			if keys {
				typ += "\t" + cmp.Or(oneLine(ti.Task.Key, 40), "-")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", ti.Task.ID, typ, ti.State, ti.Attempts,
				ago(ti.UpdatedAt, now), oneLine(ti.LastError, 60))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(infos) == *limit && len(states) == 1 {
			fmt.Fprintf(c.stderr, "more may follow: add --after %s\n", infos[len(infos)-1].Task.ID)
		}
		return nil
	})
}

// showAbout is the help of tasks show and get.
const showAbout = `Show prints one task: its state, attempts, times, headers, last error and
payload; its workflow and parents; the progress it reported while it ran;
and once done, its result (as JSON when it is JSON, else as quoted text or
base64). Tasks with a result or in a workflow stay in a store that keeps
results (sqlite, postgres, redis) for its result retention once done.

`

// parseIDs parses the flags of an inspecting command whose operands are
// task IDs, and returns them; with none it fails with the usage message
// missing.
func (c *cli) parseIDs(cmd *command, args []string, missing string) (*inspectFlags, []string, error) {
	fs, f := newInspectFlags(cmd)
	args, err := c.parse(cmd, fs, args)
	if err != nil {
		return nil, nil, err
	}
	if len(args) == 0 {
		return nil, nil, usagef("%s", missing)
	}
	return f, args, nil
}

// parseOneID parses the flags of an inspecting command whose operand is
// one ID of a what ("task" or "workflow"), and returns it.
func (c *cli) parseOneID(cmd *command, args []string, what string) (*inspectFlags, string, error) {
	fs, f := newInspectFlags(cmd)
	args, err := c.parse(cmd, fs, args)
	if err != nil {
		return nil, "", err
	}
	if len(args) != 1 {
		return nil, "", usagef("give one %s ID", what)
	}
	return f, args[0], nil
}

func (c *cli) tasksShow(cmd *command, args []string) error {
	f, id, err := c.parseOneID(cmd, args, "task")
	if err != nil {
		return err
	}
	return c.withInspector(f, func(ctx context.Context, in peonify.Inspector, st *store) error {
		ti, err := in.Get(ctx, id)
		if errors.Is(err, peonify.ErrNotFound) {
			return fmt.Errorf("no task %q in the %s (an acked task is deleted unless the store keeps done tasks)", id, st.desc)
		}
		if err != nil {
			return err
		}
		if f.json {
			return c.printJSON(toJSON(ti, true))
		}
		now := time.Now()
		tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
		row := func(k, v string) {
			if v != "" {
				fmt.Fprintf(tw, "%s:\t%s\n", k, v)
			}
		}
		t := ti.Task
		row("ID", t.ID)
		row("Type", t.Type)
		row("State", string(ti.State))
		attempts := fmt.Sprint(ti.Attempts)
		if t.MaxAttempts > 0 {
			attempts += fmt.Sprintf(" (at most %d)", t.MaxAttempts)
		}
		row("Attempts", attempts)
		if t.Priority != 0 {
			row("Priority", fmt.Sprint(t.Priority))
		}
		row("Unique key", t.UniqueKey)
		row("Key", t.Key)
		row("Workflow", t.Workflow)
		if len(t.Parents) > 0 {
			parents := strings.Join(t.Parents, ", ")
			if t.AllowFailedParents {
				parents += " (runs even if they fail)"
			}
			row("Parents", parents)
		}
		row("Enqueued", stamp(t.EnqueuedAt, now))
		if ti.State == peonify.StateScheduled || ti.State == peonify.StatePending {
			row("Run at", stamp(t.RunAt, now))
		}
		if ti.State == peonify.StateRunning {
			row("Lease until", stamp(ti.LeaseUntil, now))
		}
		row("Updated", stamp(ti.UpdatedAt, now))
		for _, k := range yamlfile.SortedKeys(t.Headers) {
			row("Header "+k, t.Headers[k])
		}
		if pc := progressPercent(ti); pc != "" {
			if ti.Progress.Message != "" {
				pc += " " + oneLine(ti.Progress.Message, peonify.MaxProgressMessageLen)
			}
			if !ti.Progress.UpdatedAt.IsZero() {
				pc += " (" + ago(ti.Progress.UpdatedAt, now) + ")"
			}
			row("Progress", pc)
		}
		row("Last error", ti.LastError)
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "Payload: %s\n", showPayload(t.Payload))
		if ti.Result != nil {
			fmt.Fprintf(c.stdout, "Result: %s\n", showResult(ti.Result))
		}
		return nil
	})
}

func (c *cli) tasksRetry(cmd *command, args []string) error {
	fs, f := newInspectFlags(cmd)
	all := fs.Bool("all", false, "retry every dead task")
	args, err := c.parse(cmd, fs, args)
	if err != nil {
		return err
	}
	switch {
	case *all && len(args) > 0:
		return usagef("give task IDs or --all, not both")
	case !*all && len(args) == 0:
		return usagef("give the IDs of dead tasks to retry, or --all to retry every dead task")
	}
	return c.withInspector(f, func(ctx context.Context, in peonify.Inspector, st *store) error {
		n, err := in.Retry(ctx, args...)
		if err != nil {
			return err
		}
		return c.reportChanged(f, "retried", n, "dead ", len(args), "not dead tasks of the "+st.desc)
	})
}

func (c *cli) tasksDelete(cmd *command, args []string) error {
	f, args, err := c.parseIDs(cmd, args, "give the IDs of the tasks to delete (to delete every task in a state, use purge)")
	if err != nil {
		return err
	}
	return c.withInspector(f, func(ctx context.Context, in peonify.Inspector, st *store) error {
		n, err := in.Delete(ctx, args...)
		if err != nil {
			return err
		}
		return c.reportChanged(f, "deleted", n, "", len(args), "running or not in the "+st.desc)
	})
}

// reportChanged prints how many tasks a retry or delete changed ("retried
// 3 dead tasks", or {"retried": 3} with --json), and on stderr how many of
// the asked IDs it did not change, and why (missing).
func (c *cli) reportChanged(f *inspectFlags, verb string, n int, kind string, asked int, missing string) error {
	if f.json {
		return c.printJSON(map[string]int{verb: n})
	}
	fmt.Fprintf(c.stdout, "%s %d %s%s\n", verb, n, kind, plural(n, "task", "tasks"))
	if asked > n {
		fmt.Fprintf(c.stderr, "%d of the IDs are %s\n", asked-n, missing)
	}
	return nil
}

func (c *cli) tasksPurge(cmd *command, args []string) error {
	fs, f := newInspectFlags(cmd)
	state := fs.String("state", "", "the `state` to empty: dead, done, cancelled or pending (required)")
	yes := fs.Bool("yes", false, "confirm purging pending tasks, which have not run yet")
	if err := c.parseFlags(cmd, fs, args); err != nil {
		return err
	}
	if *state == "" {
		return usagef("--state is required: dead, done, cancelled or pending")
	}
	s, err := parseState(*state, peonify.StateDead, peonify.StateDone, peonify.StateCancelled, peonify.StatePending)
	if err != nil {
		return err
	}
	if s == peonify.StatePending && !*yes {
		return usagef("purging pending tasks deletes work that has not run: add --yes if that is what you want")
	}
	return c.withInspector(f, func(ctx context.Context, in peonify.Inspector, st *store) error {
		n, err := in.Purge(ctx, s)
		if err != nil {
			return err
		}
		if f.json {
			return c.printJSON(map[string]int{"purged": n})
		}
		fmt.Fprintf(c.stdout, "purged %d %s %s\n", n, s, plural(n, "task", "tasks"))
		return nil
	})
}

// taskJSON is a task in --json output.
type taskJSON struct {
	ID            string            `json:"id"`
	Type          string            `json:"type"`
	State         peonify.State     `json:"state"`
	Attempts      int               `json:"attempts"`
	MaxAttempts   int               `json:"max_attempts,omitempty"`
	Priority      int               `json:"priority,omitempty"`
	UniqueKey     string            `json:"unique_key,omitempty"`
	Key           string            `json:"key,omitempty"`
	Headers       map[string]string `json:"headers,omitempty"`
	LastError     string            `json:"last_error,omitempty"`
	EnqueuedAt    *time.Time        `json:"enqueued_at,omitempty"`
	RunAt         *time.Time        `json:"run_at,omitempty"`
	LeaseUntil    *time.Time        `json:"lease_until,omitempty"`
	UpdatedAt     *time.Time        `json:"updated_at,omitempty"`
	Payload       json.RawMessage   `json:"payload,omitempty"`        // when it is JSON
	PayloadBase64 []byte            `json:"payload_base64,omitempty"` // when it is not

	Workflow           string          `json:"workflow,omitempty"`
	Parents            []string        `json:"parents,omitempty"`
	AllowFailedParents bool            `json:"allow_failed_parents,omitempty"`
	Progress           *progressJSON   `json:"progress,omitempty"`
	Result             json.RawMessage `json:"result,omitempty"`        // when it is JSON
	ResultBase64       *[]byte         `json:"result_base64,omitempty"` // when it is not (an empty result is "")
}

// progressJSON is a task's progress in --json output.
type progressJSON struct {
	Fraction  float64    `json:"fraction"`
	Message   string     `json:"message,omitempty"`
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
}

func toJSON(ti peonify.TaskInfo, withPayload bool) taskJSON {
	t := ti.Task
	opt := func(tm time.Time) *time.Time {
		if tm.IsZero() {
			return nil
		}
		return &tm
	}
	out := taskJSON{ID: t.ID, Type: t.Type, State: ti.State, Attempts: ti.Attempts, MaxAttempts: t.MaxAttempts,
		Priority: t.Priority, UniqueKey: t.UniqueKey, Key: t.Key, Headers: t.Headers, LastError: ti.LastError,
		EnqueuedAt: opt(t.EnqueuedAt), RunAt: opt(t.RunAt), LeaseUntil: opt(ti.LeaseUntil), UpdatedAt: opt(ti.UpdatedAt)}
	if withPayload && len(t.Payload) > 0 {
		if json.Valid(t.Payload) {
			out.Payload = t.Payload
		} else {
			out.PayloadBase64 = t.Payload
		}
	}
	out.Workflow, out.Parents, out.AllowFailedParents = t.Workflow, t.Parents, t.AllowFailedParents
	if progressPercent(ti) != "" {
		out.Progress = &progressJSON{Fraction: ti.Progress.Fraction, Message: ti.Progress.Message, UpdatedAt: opt(ti.Progress.UpdatedAt)}
	}
	if withPayload && ti.Result != nil {
		if json.Valid(ti.Result) {
			out.Result = ti.Result
		} else {
			r := ti.Result
			out.ResultBase64 = &r
		}
	}
	return out
}

// showPayload formats a payload for people: indented JSON, text, or a
// size for binary data.
func showPayload(p []byte) string {
	if len(p) == 0 {
		return "(empty)"
	}
	var buf bytes.Buffer
	if json.Valid(p) && json.Indent(&buf, p, "  ", "  ") == nil {
		return "\n  " + buf.String()
	}
	if utf8.Valid(p) && !slices.ContainsFunc([]rune(string(p)), func(r rune) bool { return r < ' ' && r != '\n' && r != '\t' }) {
		return fmt.Sprintf("%q", p)
	}
	return fmt.Sprintf("(%d bytes of binary data; --json shows them in base64)", len(p))
}

// showResult formats a task's result for people: indented JSON, quoted
// text, or base64 for binary data.
func showResult(r []byte) string {
	if len(r) == 0 {
		return "(empty)"
	}
	var buf bytes.Buffer
	if json.Valid(r) && json.Indent(&buf, r, "  ", "  ") == nil {
		return "\n  " + buf.String()
	}
	if utf8.Valid(r) && !slices.ContainsFunc([]rune(string(r)), func(c rune) bool { return c < ' ' && c != '\n' && c != '\t' }) {
		return fmt.Sprintf("%q", r)
	}
	return fmt.Sprintf("(%d bytes, base64) %s", len(r), base64.StdEncoding.EncodeToString(r))
}

// stamp formats a time with how far it is from now.
func stamp(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format("2006-01-02 15:04:05") + " (" + ago(t, now) + ")"
}

// ago says how long ago (or how far ahead) t is, roughly.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	suffix := " ago"
	if d < 0 {
		d, suffix = -d, " from now"
	}
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds%s", int(d.Seconds()), suffix)
	case d < time.Hour:
		return fmt.Sprintf("%dm%s", int(d.Minutes()), suffix)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%s", int(d.Hours()), suffix)
	}
	return fmt.Sprintf("%dd%s", int(d.Hours()/24), suffix)
}

// oneLine shortens s to one line of at most n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

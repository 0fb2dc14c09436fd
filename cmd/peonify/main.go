package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/peonify/peonify/internal/executor"
)

func main() {
	// The hidden supervisor of an exec task's command (see internal/executor).
	if code, ok := executor.SupervisorMain(os.Args[1:]); ok {
		os.Exit(code)
	}
	c := &cli{
		stdin:     os.Stdin,
		stdout:    os.Stdout,
		stderr:    os.Stderr,
		lookupEnv: os.LookupEnv,
		tty:       isTerminal(os.Stderr),
	}
	os.Exit(c.main(os.Args[1:]))
}

// cli is one run of the command, with its outside world.
type cli struct {
	stdin     io.Reader
	stdout    io.Writer
	stderr    io.Writer
	lookupEnv func(string) (string, bool)
	tty       bool // stderr is a terminal: draw progress in place
}

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed
	exitUsage   = 2 // bad flags, arguments or config file
	exitFailed  = 3 // tasks wait: the task finished dead or cancelled
	exitTimeout = 4 // tasks wait: the task did not finish within --timeout
)

// statusError ends a command with an exit status of its own, after its
// message.
type statusError struct {
	code int
	err  error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

// command is one subcommand.
type command struct {
	name    string
	summary string
	usage   string // the synopsis after "peonify "
	about   string // what it does, one paragraph or more
	example string
	run     func(c *cli, cmd *command, args []string) error
}

// commands lists the subcommands in the order help shows them.
func commands() []*command {
	return []*command{demoCommand(), runCommand(), enqueueCommand(), tasksCommand(), workflowsCommand(), migrateCommand(), versionCommand()}
}

// usageError is a mistake in how the command was called.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// errHelp ends a command that printed its help.
var errHelp = errors.New("help requested")

func (c *cli) main(args []string) int {
	if len(args) == 0 {
		c.help(c.stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 && name == "help" {
			if cmd := lookup(args[1]); cmd != nil {
				c.commandHelp(cmd, nil)
				return exitOK
			}
			fmt.Fprintf(c.stderr, "peonify: unknown command %q\n", args[1])
			return exitUsage
		}
		c.help(c.stdout)
		return exitOK
	case "-v", "-version", "--version":
		name = "version"
	}
	cmd := lookup(name)
	if cmd == nil {
		fmt.Fprintf(c.stderr, "peonify: unknown command %q\nRun 'peonify --help' for the list of commands.\n", name)
		return exitUsage
	}
	err := cmd.run(c, cmd, args[1:])
	var (
		ue *usageError
		ce *configError
		se *statusError
	)
	switch {
	case err == nil, errors.Is(err, errHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "peonify %s: %s\nRun 'peonify %s --help' for usage and an example.\n", cmd.name, ue.msg, cmd.name)
		return exitUsage
	case errors.As(err, &ce):
		fmt.Fprintf(c.stderr, "peonify %s: bad config: %s\n", cmd.name, ce)
		return exitUsage
	case errors.As(err, &se):
		fmt.Fprintf(c.stderr, "peonify %s: %s\n", cmd.name, se)
		return se.code
	default:
		fmt.Fprintf(c.stderr, "peonify %s: %s\n", cmd.name, err)
		return exitFailure
	}
}

func lookup(name string) *command {
	for _, cmd := range commands() {
		if cmd.name == name {
			return cmd
		}
	}
	return nil
}

// help prints the overview of every command.
func (c *cli) help(w io.Writer) {
	fmt.Fprint(w, `Peonify runs background tasks from durable streams.

Usage:
  peonify <command> [flags] [arguments]

Commands:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, cmd := range commands() {
		fmt.Fprintf(tw, "  %s\t%s\n", cmd.name, cmd.summary)
	}
	tw.Flush()
	fmt.Fprint(w, `
Example:
  peonify demo                  # see it work, with nothing to set up
  peonify run -c peonify.yaml   # the standalone processor

Run 'peonify <command> --help' for a command's flags and an example.
`)
}

// commandHelp prints a command's usage, description, example and flags to
// stdout.
func (c *cli) commandHelp(cmd *command, fs *flag.FlagSet) {
	w := c.stdout
	fmt.Fprintf(w, "Usage:\n  peonify %s\n\n%s\n", cmd.usage, strings.TrimSpace(cmd.about))
	fmt.Fprintf(w, "\nExample:\n%s\n", indent(strings.TrimSpace(cmd.example), "  "))
	if fs == nil {
		fs = flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	}
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprint(w, "\nFlags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
}

// parse parses a command's flags, which may come before, between or after
// its positional arguments (until a "--"), and returns the positional
// arguments. --help prints the command's help and returns errHelp.
func (c *cli) parse(cmd *command, fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var positional []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			c.commandHelp(cmd, fs)
			return nil, errHelp
		}
		if err != nil {
			return nil, &usageError{err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// parseFlags parses the flags of a command that takes no positional
// arguments, and rejects any.
func (c *cli) parseFlags(cmd *command, fs *flag.FlagSet, args []string) error {
	args, err := c.parse(cmd, fs, args)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		return usagef("unexpected argument %q (this command takes flags only)", args[0])
	}
	return nil
}

func indent(s, prefix string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "\n")
}

// isTerminal reports whether f is a terminal that can take \r redraws.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	term, _ := os.LookupEnv("TERM")
	return term != "dumb"
}

package main

import (
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"
)

func versionCommand() *command {
	return &command{
		name:    "version",
		summary: "print the version of this binary",
		usage:   "version",
		about:   "Version prints the module version peonify was built from, with the source revision and Go version when known.",
		example: "peonify version",
		run:     (*cli).version,
	}
}

func (c *cli) version(cmd *command, args []string) error {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	if err := c.parseFlags(cmd, fs, args); err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, versionString())
	return nil
}

// versionString describes the build: the module version (a tag when
// installed with go install module@version, "(devel)" from a checkout),
// the VCS revision when the build recorded one, and the Go version.
func versionString() string {
	version, rev, modified := "(unknown)", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	out := "peonify " + version
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		out += " " + rev
		if modified {
			out += " (modified)"
		}
	}
	return fmt.Sprintf("%s %s %s/%s", out, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

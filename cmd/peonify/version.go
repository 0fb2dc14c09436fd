package main

import (
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func versionCommand() *command {
	return &command{
		name:    "version",
		summary: "print the version of this binary",
		usage:   "version",
		about: `Version prints the module version peonify was built from, the commit
(vcs.revision, marked "modified" when the work tree had uncommitted
changes, and its time) when the build recorded one, and the Go version.
/metrics exports the same as peonify_build_info.`,
		example: "peonify version",
		run:     (*cli).version,
	}
}

func (c *cli) version(cmd *command, args []string) error {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	if err := c.parseFlags(cmd, fs, args); err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, readBuildInfo())
	return nil
}

// buildInfo describes the build, from the Go build info.
type buildInfo struct {
	version  string // a tag when installed with go install module@version, "(devel)" from a checkout
	revision string // vcs.revision, "" when the build recorded none (-buildvcs=false, no .git)
	time     string // vcs.time, RFC 3339
	modified bool   // vcs.modified: the work tree had uncommitted changes
	goVer    string
}

// readBuildInfo returns the build's info; the fields the build did not
// record are empty, the version "(unknown)".
func readBuildInfo() buildInfo {
	b := buildInfo{version: "(unknown)", goVer: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if bi.Main.Version != "" {
		b.version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.revision = s.Value
		case "vcs.time":
			b.time = s.Value
		case "vcs.modified":
			b.modified = s.Value == "true"
		}
	}
	return b
}

// String is the line peonify version prints, e.g.
//
//	peonify v1.2.0 commit 0123456789ab (2026-01-02T03:04:05Z) go1.26.1 linux/amd64
//	peonify (devel) commit 0123456789ab-modified (2026-01-02T03:04:05Z) go1.26.1 linux/amd64
func (b buildInfo) String() string {
	out := "peonify " + b.version
	if b.revision != "" {
		out += " commit " + b.shortRevision()
		if b.modified {
			out += "-modified"
		}
		if t, err := time.Parse(time.RFC3339, b.time); err == nil {
			out += " (" + t.UTC().Format(time.RFC3339) + ")"
		}
	}
	return fmt.Sprintf("%s %s %s/%s", out, b.goVer, runtime.GOOS, runtime.GOARCH)
}

func (b buildInfo) shortRevision() string {
	if len(b.revision) > 12 {
		return b.revision[:12]
	}
	return b.revision
}

// collector exports the build as the gauge peonify_build_info, 1, with
// labels version, revision (full), modified ("true" or "false") and
// goversion: join it to other series to see which build exports them.
func (b buildInfo) collector() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "peonify_build_info",
		Help: "The build of the peonify daemon: version, commit (vcs.revision, vcs.modified) and Go version, from the Go build info. Always 1.",
		ConstLabels: prometheus.Labels{
			"version": b.version, "revision": b.revision, "modified": fmt.Sprint(b.modified), "goversion": b.goVer,
		},
	})
	g.Set(1)
	return g
}

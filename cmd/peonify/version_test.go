package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// peonify version and /metrics name the commit the binary was built
// from, as git knows it, when the build recorded one.
func TestVersionShowsTheCommit(t *testing.T) {
	dir := t.TempDir()
	r := mustRun(t, dir, "", "version")
	// What the Go toolchain says of the binary: no vcs.revision with
	// -buildvcs=false (in GOFLAGS here) or outside a git clone.
	info, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^\s*build\s+vcs\.revision=(\w+)`).FindSubmatch(info); m == nil {
		t.Logf("the test binary has no vcs.revision (built with -buildvcs=false, or not in a git clone): version %q", r.stdout)
	} else if rev := string(m[1]); !strings.Contains(r.stdout, " commit "+rev[:12]) {
		t.Errorf("version %q does not name the commit %s", r.stdout, rev[:12])
	}

	writeFile(t, dir, "peonify.yaml", "streams:\n  - {kind: sqlite, path: store.db}\n"+
		"tasks:\n  t: {executor: exec, shell: 'true'}\nhttp: {listen: '127.0.0.1:0', dashboard: {enabled: false}}\n")
	d := startDaemon(t, dir, "peonify.yaml")
	admin := d.listenAddr("serving metrics and health checks")
	d.waitLog("peonify: running")
	_, body := get(t, admin+"/metrics")
	var line string
	for l := range strings.Lines(body) {
		if strings.HasPrefix(l, "peonify_build_info{") {
			line = l
		}
	}
	fields := strings.Fields(r.stdout) // peonify VERSION [commit REV ...]
	if line == "" || !strings.Contains(line, `version="`+fields[1]+`"`) || !strings.HasSuffix(strings.TrimSpace(line), " 1") {
		t.Errorf("/metrics: peonify_build_info is %q, want version %s", line, fields[1])
	}
	if len(fields) > 3 && fields[2] == "commit" && !strings.Contains(line, `revision="`+strings.TrimSuffix(fields[3], "-modified")) {
		t.Errorf("/metrics: peonify_build_info %q does not name the commit %s", line, fields[3])
	}
	if code, log := d.stop(); code != 0 {
		t.Fatalf("peonify run exited %d; log:\n%s", code, log)
	}
}

// A binary built from a git clone with -buildvcs=true names the clone's
// HEAD, whatever GOFLAGS the tests run with (-buildvcs=false leaves the
// test binary of TestVersionShowsTheCommit without a commit).
func TestVersionNamesHead(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no second binary is built")
	}
	out, err := exec.Command("git", "rev-parse", "HEAD", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not in a git clone, or no git (%v): the build records no commit", err)
	}
	lines := strings.Fields(string(out))
	rev, top := lines[0], lines[1]
	if fi, err := os.Stat(filepath.Join(top, ".git")); err != nil || !fi.IsDir() {
		// The go command looks for a .git directory: in a worktree or a
		// submodule, whose .git is a file, it records no commit.
		t.Skipf("%s/.git is not a directory (a git worktree or submodule): the go command records no commit there", top)
	}
	exe := filepath.Join(t.TempDir(), "peonify")
	args := []string{"build", "-buildvcs=true", "-o", exe}
	if raceEnabled {
		args = append(args, "-race") // as TestMain builds bin: the packages are built already
	}
	if b, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
		t.Fatalf("go build -buildvcs=true: %v\n%s", err, b)
	}
	v, err := exec.Command(exe, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(v), " commit "+rev[:12]) {
		t.Errorf("peonify version printed %q, want the commit %s", v, rev[:12])
	}
}

// The version line shows what the build recorded.
func TestBuildInfoString(t *testing.T) {
	for _, tc := range []struct {
		b    buildInfo
		want string
	}{
		{buildInfo{version: "v1.2.0", goVer: "go1.26.1"}, "peonify v1.2.0 go1.26.1 "},
		{buildInfo{version: "v1.2.0", revision: "0123456789abcdef0123", time: "2026-01-02T03:04:05Z", goVer: "go1.26.1"},
			"peonify v1.2.0 commit 0123456789ab (2026-01-02T03:04:05Z) go1.26.1 "},
		{buildInfo{version: "(devel)", revision: "0123456789abcdef0123", modified: true, goVer: "go1.26.1"},
			"peonify (devel) commit 0123456789ab-modified go1.26.1 "},
	} {
		if got := tc.b.String(); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%+v: %q, want %q...", tc.b, got, tc.want)
		}
	}
}

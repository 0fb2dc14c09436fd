package snippettest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var (
	commandUse  = regexp.MustCompile("(?:^|[\\s`(|$])peonify ([a-z]+)(?: ([a-z]+))?([^|#;`)]*)")
	flagUse     = regexp.MustCompile(`(?:^|\s)--?([a-z][a-z-]*)`)
	helpFlag    = regexp.MustCompile(`(?m)^  -([a-z][a-z-]*)`)
	codeSpan    = regexp.MustCompile("`([^`]+)`")
	htmlComment = regexp.MustCompile(`(?s)<!--.*?-->`)
	helpCommand = regexp.MustCompile(`(?m)^  ([a-z]+)  `)
	subUsage    = regexp.MustCompile(`peonify (?:tasks|workflows) ([a-z|]+)`)
)

// TestCommands checks that every use of the peonify command in the
// READMEs' code (inline code and shell blocks) names a command, a
// subcommand (of tasks and workflows) and flags that the binary has: a
// README once sent readers to `peonify tasks get`, which was then
// `peonify tasks show`.
func TestCommands(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := buildPeonify(t, root)
	help, _ := exec.Command(bin, "--help").CombinedOutput()
	var commands []string
	for _, m := range helpCommand.FindAllStringSubmatch(string(help), -1) {
		commands = append(commands, m[1])
	}
	if len(commands) < 5 {
		t.Fatalf("cannot read the commands from peonify --help:\n%s", help)
	}
	// subcommands lists the subcommands of the commands that have some.
	subcommands := map[string][]string{}
	for _, cmd := range []string{"tasks", "workflows"} {
		out, _ := exec.Command(bin, cmd, "--help").CombinedOutput()
		m := subUsage.FindStringSubmatch(string(out))
		if m == nil {
			t.Fatalf("cannot read the subcommands from peonify %s --help:\n%s", cmd, out)
		}
		subcommands[cmd] = strings.Split(m[1], "|")
	}

	files, err := readmes(root)
	if err != nil {
		t.Fatal(err)
	}
	// flags lists the flags of a command from its --help.
	flagsOf := map[string][]string{}
	flags := func(args ...string) []string {
		key := strings.Join(args, " ")
		if f, ok := flagsOf[key]; ok {
			return f
		}
		out, _ := exec.Command(bin, append(args, "--help")...).CombinedOutput()
		f := []string{"help", "h"}
		for _, m := range helpFlag.FindAllStringSubmatch(string(out), -1) {
			f = append(f, m[1])
		}
		flagsOf[key] = f
		return f
	}
	checked := 0
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range commandUses(string(b)) {
			checked++
			switch {
			case !slices.Contains(commands, u.cmd):
				t.Errorf("%s:%d: `peonify %s` is not a command; peonify --help lists %s", f, u.line, u.cmd, strings.Join(commands, ", "))
			case subcommands[u.cmd] != nil && u.sub != "" && !slices.Contains(subcommands[u.cmd], u.sub):
				t.Errorf("%s:%d: `peonify %s %s` is not a subcommand; peonify %s --help lists %s", f, u.line, u.cmd, u.sub, u.cmd, strings.Join(subcommands[u.cmd], ", "))
			default:
				args := []string{u.cmd}
				if subcommands[u.cmd] != nil && u.sub != "" {
					args = append(args, u.sub)
				}
				known := flags(args...)
				for _, m := range flagUse.FindAllStringSubmatch(u.rest, -1) {
					if !slices.Contains(known, m[1]) {
						t.Errorf("%s:%d: `peonify %s` has no flag -%s; its --help lists %s", f, u.line, strings.Join(args, " "), m[1], strings.Join(known, ", "))
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("found no use of the peonify command in the READMEs")
	}
}

type commandUseAt struct {
	line           int
	cmd, sub, rest string // rest: the line after them, up to a pipe, comment or the code span's end
}

func (u commandUseAt) String() string { return fmt.Sprintf("%d:%s %s", u.line, u.cmd, u.sub) }

// commandUses finds `peonify CMD [SUB]` in a README's inline code and in
// its shell (or untagged) code blocks.
func commandUses(text string) []commandUseAt {
	// Comments are blanked, keeping their line breaks.
	text = htmlComment.ReplaceAllStringFunc(text, func(c string) string { return strings.Repeat("\n", strings.Count(c, "\n")) })
	var out []commandUseAt
	inFence, shell := false, false
	for i, line := range strings.Split(text, "\n") {
		if f := fence.FindStringSubmatch(strings.TrimSpace(line)); f != nil {
			inFence = !inFence
			lang := strings.ToLower(f[2])
			shell = inFence && slices.Contains([]string{"", "sh", "bash", "shell", "console"}, lang)
			continue
		}
		var spans []string
		switch {
		case inFence && shell:
			spans = []string{line}
		case !inFence:
			for _, m := range codeSpan.FindAllStringSubmatch(line, -1) {
				spans = append(spans, m[1])
			}
		}
		for _, s := range spans {
			for _, m := range commandUse.FindAllStringSubmatch(s, -1) {
				rest := m[3]
				if m[2] != "" && m[1] != "tasks" && m[1] != "workflows" { // a second word that is an argument, not a subcommand
					rest = " " + m[2] + rest
				}
				out = append(out, commandUseAt{line: i + 1, cmd: m[1], sub: m[2], rest: rest})
			}
		}
	}
	return out
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)`)

// TestConfigs checks with `peonify run --check` every whole config file
// that a README shows: a YAML block that starts with "streams:". The
// variables it names are set to a placeholder.
func TestConfigs(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := buildPeonify(t, root)
	files, err := readmes(root)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range yamlBlocks(string(b)) {
			if !strings.HasPrefix(c.text, "streams:") {
				continue
			}
			checked++
			path := filepath.Join(t.TempDir(), "peonify.yaml")
			if err := os.WriteFile(path, []byte(c.text), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "run", "--check", "-c", path)
			cmd.Env = os.Environ()
			for _, m := range envRef.FindAllStringSubmatch(c.text, -1) {
				cmd.Env = append(cmd.Env, m[1]+"=placeholder-secret-0123456789")
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s:%d: peonify run --check refuses the config: %v\n%s", f, c.line, err, out)
			}
		}
	}
	if checked == 0 {
		t.Fatal("found no config file in the READMEs")
	}
	t.Logf("checked %d config files", checked)
}

type block struct {
	line int
	text string
}

// yamlBlocks returns the fenced YAML blocks of a README.
func yamlBlocks(text string) []block {
	var out []block
	var cur *block
	for i, line := range strings.Split(text, "\n") {
		f := fence.FindStringSubmatch(strings.TrimSpace(line))
		switch {
		case cur == nil && f != nil && strings.ToLower(f[2]) == "yaml":
			cur = &block{line: i + 1}
		case cur != nil && f != nil:
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		}
	}
	return out
}

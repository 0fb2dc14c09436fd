package snippettest

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// A snippet is one marked fenced code block of a README.
type snippet struct {
	file string // relative to the repository's root
	line int    // of the opening fence
	lang string // the fence's language, lower case; "" for none
	code string // the block's text, with its final newline
	kind string // the marker's first word: a stream or intake kind, or "none"
	why  string // for kind "none": the reason
	attr map[string]string
}

func (s snippet) String() string {
	return fmt.Sprintf("%s:%d (%s %s)", s.file, s.line, s.kind, s.runner())
}

// runner names the program that runs the snippet: python, node, psql,
// bash or redis-cli.
func (s snippet) runner() string {
	if r := s.attr["run"]; r != "" {
		return r
	}
	switch s.lang {
	case "python", "py":
		return "python"
	case "js", "javascript", "mjs":
		return "node"
	case "sql":
		return "psql"
	case "sh", "bash", "shell", "console":
		return "bash"
	}
	return ""
}

// markedLangs are the fence languages whose blocks must have a marker:
// those a producer snippet would be written in. Go, YAML, JSON and text
// blocks are left out; Go code is tested by the packages' own tests.
var markedLangs = []string{"", "python", "py", "js", "javascript", "mjs", "sql", "sh", "bash", "shell", "console"}

// kinds are the marker kinds, with the keys each accepts besides type,
// id, payload, url, host and run.
var kinds = map[string][]string{
	"postgres":  {"queue"},
	"redis":     {"queue"},
	"nats":      {"subject"},
	"amqp":      {"queue"},
	"mqtt":      {"topic"},
	"webhook":   {"path", "secret", "header", "prefix", "id_header"},
	"websocket": {"path"},
	"api":       {},
}

var (
	fence  = regexp.MustCompile("^(```+|~~~+)\\s*([A-Za-z0-9_+-]*)")
	marker = regexp.MustCompile(`^<!--\s*snippet:\s*(.*?)\s*-->\s*$`)
)

// readmes lists the README.md files of the repository at root, relative to
// it, leaving out testdata and node_modules.
func readmes(root string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (n == "testdata" || n == "node_modules" || strings.HasPrefix(n, ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Name() == "README.md" {
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	return out, err
}

// extract returns the marked blocks of a README and an error for each
// block of a language in markedLangs that has no marker, or for a
// malformed marker.
func extract(file, text string) ([]snippet, []error) {
	var (
		out      []snippet
		errs     []error
		pending  string // the marker on the line before, if any
		markLine int
	)
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if m := marker.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			pending, markLine = m[1], n
			continue
		}
		f := fence.FindStringSubmatch(strings.TrimLeft(line, " "))
		if f == nil {
			if strings.TrimSpace(line) != "" && pending != "" {
				errs = append(errs, fmt.Errorf("%s:%d: a snippet marker must be on the line just before its code block", file, markLine))
				pending = ""
			}
			continue
		}
		start, lang, delim := n, strings.ToLower(f[2]), f[1]
		var code strings.Builder
		closed := false
		for sc.Scan() {
			n++
			l := sc.Text()
			if t := strings.TrimSpace(l); strings.HasPrefix(t, delim) && strings.Trim(t, delim[:1]) == "" {
				closed = true
				break
			}
			code.WriteString(l)
			code.WriteByte('\n')
		}
		if !closed {
			errs = append(errs, fmt.Errorf("%s:%d: code block never closed", file, start))
		}
		mark := pending
		pending = ""
		if mark == "" {
			if slices.Contains(markedLangs, lang) {
				errs = append(errs, fmt.Errorf("%s:%d: a %q code block without a snippet marker: put <!-- snippet: KIND ... --> (or <!-- snippet: none REASON --> for a block that enqueues nothing) on the line before it; see internal/snippettest/doc.go", file, start, lang))
			}
			continue
		}
		s, err := parseMarker(mark)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: snippet marker: %v", file, markLine, err))
			continue
		}
		s.file, s.line, s.lang, s.code = file, start, lang, code.String()
		if s.kind != "none" && s.runner() == "" {
			errs = append(errs, fmt.Errorf("%s:%d: snippet marker: no runner for a %q block: give run=redis-cli or a fence language (python, js, sql, sh)", file, markLine, lang))
			continue
		}
		out = append(out, s)
	}
	if pending != "" {
		errs = append(errs, fmt.Errorf("%s:%d: a snippet marker with no code block after it", file, markLine))
	}
	return out, errs
}

// parseMarker parses the text of a marker: KIND key=value... payload=REST,
// or none REASON.
func parseMarker(m string) (snippet, error) {
	kind, rest, _ := strings.Cut(m, " ")
	s := snippet{kind: kind, attr: map[string]string{}}
	if kind == "none" {
		s.why = strings.TrimSpace(rest)
		if s.why == "" {
			return s, fmt.Errorf("none needs a reason: <!-- snippet: none REASON -->")
		}
		return s, nil
	}
	keys, ok := kinds[kind]
	if !ok {
		return s, fmt.Errorf("unknown kind %q: one of postgres, redis, nats, amqp, mqtt, webhook, websocket, api or none", kind)
	}
	keys = append([]string{"type", "id", "url", "host", "run", "resend"}, keys...)
	rest = strings.TrimSpace(rest)
	for rest != "" {
		var word string
		word, rest, _ = strings.Cut(rest, " ")
		rest = strings.TrimSpace(rest)
		k, v, ok := strings.Cut(word, "=")
		if !ok {
			return s, fmt.Errorf("%q is not key=value", word)
		}
		if k == "payload" {
			s.attr[k] = strings.TrimSpace(v + " " + rest)
			break
		}
		if !slices.Contains(keys, k) {
			return s, fmt.Errorf("unknown key %q for %s: one of %s, payload", k, kind, strings.Join(keys, ", "))
		}
		if _, dup := s.attr[k]; dup {
			return s, fmt.Errorf("%s given twice", k)
		}
		s.attr[k] = v
	}
	for _, k := range []string{"type", "payload"} {
		if _, ok := s.attr[k]; !ok {
			return s, fmt.Errorf("%s= is required", k)
		}
	}
	if r, ok := s.attr["resend"]; ok && r != "once" {
		return s, fmt.Errorf("resend=%s: the only value is resend=once", r)
	}
	return s, nil
}

// allSnippets reads every README of the repository at root.
func allSnippets(root string) ([]snippet, []error) {
	files, err := readmes(root)
	if err != nil {
		return nil, []error{err}
	}
	var out []snippet
	var errs []error
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s, e := extract(f, string(b))
		out = append(out, s...)
		errs = append(errs, e...)
	}
	return out, errs
}

// TestExtract checks the marker convention itself: a producer block
// without a marker is an error, so that no snippet goes untested.
func TestExtract(t *testing.T) {
	const doc = "# x\n\n" +
		"<!-- snippet: redis url=redis://localhost:6379 queue=emails type=t payload={\"a\": 1} -->\n" +
		"```python\nprint(1)\n```\n\n" +
		"```go\nfmt.Println()\n```\n\n" +
		"<!-- snippet: none not a producer -->\n" +
		"```sql\nSELECT 1;\n```\n\n" +
		"```js\nconsole.log(1)\n```\n"
	got, errs := extract("README.md", doc)
	if len(got) != 2 {
		t.Fatalf("got %d snippets, want 2: %v", len(got), got)
	}
	if s := got[0]; s.kind != "redis" || s.lang != "python" || s.code != "print(1)\n" || s.line != 4 ||
		s.attr["queue"] != "emails" || s.attr["payload"] != `{"a": 1}` || s.runner() != "python" {
		t.Errorf("first snippet = %+v", s)
	}
	if s := got[1]; s.kind != "none" || s.why != "not a producer" {
		t.Errorf("second snippet = %+v", s)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "README.md:17: a \"js\" code block without a snippet marker") {
		t.Errorf("errors = %v, want one for the unmarked js block at line 17", errs)
	}

	for _, bad := range []string{
		"<!-- snippet: kafka type=t payload=x -->\n```sh\nx\n```\n",              // unknown kind
		"<!-- snippet: redis queue=q payload=x -->\n```sh\nx\n```\n",             // no type
		"<!-- snippet: redis type=t -->\n```sh\nx\n```\n",                        // no payload
		"<!-- snippet: redis type=t topic=x payload=x -->\n```sh\nx\n```\n",      // a key of another kind
		"<!-- snippet: redis type=t payload=x -->\n\ntext\n```sh\nx\n```\n",      // marker not before its block
		"<!-- snippet: redis type=t payload=x -->\n```\nXADD\n```\n",             // no runner
		"<!-- snippet: none -->\n```sh\nx\n```\n",                                // none without a reason
		"```\nXADD k * type t\n```\n",                                            // unmarked, no language
		"<!-- snippet: redis type=t run=redis-cli payload=x -->\n```\nXADD\n",    // never closed
		"<!-- snippet: redis type=t type=u payload=x -->\n```sh\nx\n```\n",       // twice
		"text\n<!-- snippet: redis type=t payload=x -->\n",                       // no block
		"<!-- snippet: redis type=t resend=twice payload=x -->\n```sh\nx\n```\n", // resend=once only
		"<!-- snippet: webhook type=t secret=s header=h payload=x -->\n```sh\n`", // never closed
	} {
		if _, errs := extract("R.md", bad); len(errs) == 0 {
			t.Errorf("no error for\n%s", bad)
		}
	}
}

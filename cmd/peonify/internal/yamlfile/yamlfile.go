// Package yamlfile is the YAML plumbing of peonify's config file: strict
// decoding with errors that name the field and its place in the file
// (FieldError), ${ENV} expansion, the value types the file uses
// (durations, sizes, payloads, nodes decoded later by kind), and the
// translation of a library's field names in Go terms to the file's
// (PathOf).
package yamlfile

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/token"
)

// FieldError is a config mistake at a field, named by its path in the
// file, e.g. "streams[1].url".
type FieldError struct {
	Path string          // "streams[1].url"; "" for the whole file
	Pos  *token.Position // where it is in the file, when known
	Msg  string          // what is wrong
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Errorf returns a *FieldError at path.
func Errorf(path, format string, args ...any) error {
	return &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// nodePath returns the path of a node in the file's terms: "streams[1].url"
// rather than goccy's "$.streams[1].url".
func nodePath(n ast.Node) string {
	p := strings.TrimPrefix(n.GetPath(), "$")
	return strings.TrimPrefix(p, ".")
}

// Join appends a field name to a path.
func Join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// Node keeps a part of the file undecoded until its kind is known (a
// stream's kind, a task type's executor).
type Node struct{ N ast.Node }

// UnmarshalYAML implements yaml.NodeUnmarshaler.
func (n *Node) UnmarshalYAML(a ast.Node) error {
	n.N = a
	return nil
}

// Duration is a time.Duration written as "30s", "5m" or "1h30m".
type Duration time.Duration

// UnmarshalYAML implements yaml.NodeUnmarshaler.
func (d *Duration) UnmarshalYAML(n ast.Node) error {
	var s string
	switch v := n.(type) {
	case *ast.StringNode:
		s = v.Value
	case *ast.IntegerNode:
		if v.GetToken().Value == "0" {
			*d = 0
			return nil
		}
		return &FieldError{Path: nodePath(n), Pos: n.GetToken().Position,
			Msg: fmt.Sprintf("%s has no unit: write a duration like 30s, 5m or 1h", v.GetToken().Value)}
	case *ast.NullNode:
		*d = 0
		return nil
	default:
		return &FieldError{Path: nodePath(n), Pos: n.GetToken().Position, Msg: "want a duration like 30s, 5m or 1h"}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return &FieldError{Path: nodePath(n), Pos: n.GetToken().Position,
			Msg: fmt.Sprintf("%q is not a duration: write one like 30s, 5m or 1h", s)}
	}
	*d = Duration(v)
	return nil
}

// Rate is a number of events per period, written "20/s", "600/m",
// "1000/h" or with any duration as the period: "5/10s", "90/1m30s". A
// zero or absent rate is N 0.
type Rate struct {
	N   int           // events per Per
	Per time.Duration // the period; 0 when N is 0
}

// String formats r as it is written in the file.
func (r Rate) String() string {
	if r.N == 0 {
		return "0"
	}
	per := r.Per.String()
	switch r.Per {
	case time.Second:
		per = "s"
	case time.Minute:
		per = "m"
	case time.Hour:
		per = "h"
	}
	return fmt.Sprintf("%d/%s", r.N, per)
}

// UnmarshalYAML implements yaml.NodeUnmarshaler.
func (r *Rate) UnmarshalYAML(n ast.Node) error {
	bad := func(format string, a ...any) error {
		return &FieldError{Path: nodePath(n), Pos: n.GetToken().Position, Msg: fmt.Sprintf(format, a...)}
	}
	var s string
	switch v := n.(type) {
	case *ast.NullNode:
		*r = Rate{}
		return nil
	case *ast.IntegerNode:
		if v.GetToken().Value == "0" {
			*r = Rate{}
			return nil
		}
		return bad("%s has no period: write the starts per period, like %s/s, %s/m or %s/10s", v.GetToken().Value, v.GetToken().Value, v.GetToken().Value, v.GetToken().Value)
	case *ast.StringNode:
		s = strings.TrimSpace(v.Value)
	default:
		return bad("want a rate like 20/s, 600/m or 5/10s")
	}
	num, per, ok := strings.Cut(s, "/")
	if !ok {
		return bad("%q is not a rate: write the starts per period, like 20/s, 600/m or 5/10s", s)
	}
	count, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil || count < 0 {
		return bad("%q is not a rate: the part before / must be a whole number of starts, like 20/s", s)
	}
	var d time.Duration
	switch per = strings.TrimSpace(per); per {
	case "s":
		d = time.Second
	case "m":
		d = time.Minute
	case "h":
		d = time.Hour
	default:
		if d, err = time.ParseDuration(per); err != nil || d <= 0 {
			return bad("%q is not a rate: the part after / must be s, m, h or a positive duration like 10s", s)
		}
	}
	if count == 0 {
		d = 0
	}
	*r = Rate{N: count, Per: d}
	return nil
}

// ByteSize is a size in bytes, written as a whole number of bytes or with
// a unit: 512KiB, 1MiB, 25MB.
type ByteSize int64

// byteUnits are the units a byteSize may be written with.
var byteUnits = []struct {
	suffix string
	n      int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"B", 1},
}

// UnmarshalYAML implements yaml.NodeUnmarshaler.
func (b *ByteSize) UnmarshalYAML(n ast.Node) error {
	bad := &FieldError{Path: nodePath(n), Pos: n.GetToken().Position,
		Msg: fmt.Sprintf("%q is not a size: write bytes as a whole number, or with a unit like 512KiB, 1MiB or 25MB", n.GetToken().Value)}
	var s string
	switch v := n.(type) {
	case *ast.NullNode:
		*b = 0
		return nil
	case *ast.IntegerNode:
		s = v.GetToken().Value
	case *ast.StringNode:
		s = strings.TrimSpace(v.Value)
	default:
		return bad
	}
	mult := int64(1)
	for _, u := range byteUnits {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(num), u.n
			break
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return bad
	}
	*b = ByteSize(v * mult)
	return nil
}

// Payload is a task payload: a string is taken byte for byte; any other
// value (a mapping, a list, a number) is encoded as JSON.
type Payload []byte

// UnmarshalYAML implements yaml.NodeUnmarshaler.
func (p *Payload) UnmarshalYAML(n ast.Node) error {
	switch v := n.(type) {
	case *ast.StringNode:
		*p = []byte(v.Value)
		return nil
	case *ast.LiteralNode:
		*p = []byte(v.Value.Value)
		return nil
	case *ast.NullNode:
		*p = nil
		return nil
	}
	var val any
	if err := yaml.NodeToValue(n, &val); err != nil {
		return err
	}
	b, err := json.Marshal(val)
	if err != nil {
		return &FieldError{Path: nodePath(n), Pos: n.GetToken().Position, Msg: "cannot be written as JSON: " + err.Error()}
	}
	*p = b
	return nil
}

// DecodeStrict decodes n into v, rejecting unknown fields, and turns the
// decoder's errors into *FieldError values naming the field.
func DecodeStrict(n ast.Node, v any) error {
	return fieldErr(n, v, yaml.NodeToValue(n, v, yaml.Strict()))
}

// DecodeLoose decodes the fields of v found in n and ignores the others.
func DecodeLoose(n ast.Node, v any) error {
	return fieldErr(n, v, yaml.NodeToValue(n, v))
}

// fieldErr turns an error of decoding n into v into a *FieldError.
func fieldErr(n ast.Node, v any, err error) error {
	if err == nil {
		return nil
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		return fe
	}
	var ye yaml.Error
	if !errors.As(err, &ye) {
		return &FieldError{Path: nodePath(n), Msg: err.Error()}
	}
	tok := ye.GetToken()
	at := find(n, tok)
	path := nodePath(n)
	if at != nil {
		path = nodePath(at)
	}
	out := &FieldError{Path: path, Msg: ye.GetMessage()}
	if tok != nil {
		out.Pos = tok.Position
	}
	var (
		unknown *yaml.UnknownFieldError
		typeErr *yaml.TypeError
		shape   *yaml.UnexpectedNodeTypeError
	)
	switch {
	case errors.As(err, &unknown):
		out.Msg = "unknown field"
		parent := path[:max(strings.LastIndexByte(path, '.'), 0)]
		if names := fieldNames(v, strings.TrimPrefix(parent, nodePath(n))); len(names) > 0 {
			where := parent
			if where == "" {
				where = "the top level"
			}
			out.Msg += fmt.Sprintf(" (fields of %s: %s)", where, strings.Join(names, ", "))
		}
	case errors.As(err, &typeErr):
		out.Msg = fmt.Sprintf("want %s, got %q", describe(typeErr.DstType), tok.Value)
	case errors.As(err, &shape):
		out.Msg = fmt.Sprintf("want %s, got %s", shapeName(shape.Expected), shapeName(shape.Actual))
	}
	return out
}

// WithPosition gives a *FieldError found by a check, which knows the
// field's path but not its place, the position of that field in the file,
// or of the nearest enclosing one that is there (the entry a required
// field is missing from).
func WithPosition(err error, root ast.Node) error {
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Pos != nil || fe.Path == "" {
		return err
	}
	n, depth := root, 0
	for _, seg := range splitPath(fe.Path) {
		next := child(n, seg)
		if next == nil {
			break
		}
		n, depth = next, depth+1
	}
	// A mapping (the entry a field is missing from) is shown at its
	// first key.
	switch v := n.(type) {
	case *ast.MappingNode:
		if len(v.Values) > 0 {
			n = v.Values[0].Key
		}
	case *ast.MappingValueNode:
		n = v.Key
	}
	if depth > 0 && n.GetToken() != nil {
		fe.Pos = n.GetToken().Position
	}
	return err
}

// child returns the value of n at one path segment: a key of a mapping
// ("url", or `["a/b"]` for keys with dots or slashes) or an index of a
// list ("[2]").
func child(n ast.Node, seg string) ast.Node {
	for {
		switch v := n.(type) {
		case *ast.TagNode:
			n = v.Value
			continue
		case *ast.AnchorNode:
			n = v.Value
			continue
		}
		break
	}
	key := seg
	if strings.HasPrefix(seg, "[") {
		inner := strings.TrimSuffix(strings.TrimPrefix(seg, "["), "]")
		if i, err := strconv.Atoi(inner); err == nil {
			if sn, ok := n.(*ast.SequenceNode); ok && i >= 0 && i < len(sn.Values) {
				return sn.Values[i]
			}
			return nil
		}
		if uq, err := strconv.Unquote(inner); err == nil {
			key = uq
		}
	}
	var pairs []*ast.MappingValueNode
	switch v := n.(type) {
	case *ast.MappingNode:
		pairs = v.Values
	case *ast.MappingValueNode:
		pairs = []*ast.MappingValueNode{v}
	}
	for _, mv := range pairs {
		if k := mv.Key.GetToken(); k != nil && k.Value == key {
			return mv.Value
		}
	}
	return nil
}

// find returns the node of root whose token is tok.
func find(root ast.Node, tok *token.Token) ast.Node {
	if tok == nil {
		return nil
	}
	var found ast.Node
	ast.Walk(visitor(func(n ast.Node) bool {
		if found != nil {
			return false
		}
		if t := n.GetToken(); t == tok || (t != nil && t.Position != nil && tok.Position != nil &&
			t.Position.Offset == tok.Position.Offset && t.Value == tok.Value) {
			found = n
			return false
		}
		return true
	}), root)
	return found
}

type visitor func(ast.Node) bool

func (v visitor) Visit(n ast.Node) ast.Visitor {
	if v(n) {
		return v
	}
	return nil
}

// fieldNames lists the YAML field names of the struct that v (a pointer)
// holds at the relative path rel ("" for v itself, ".retry", "[2]").
func fieldNames(v any, rel string) []string {
	t := reflect.TypeOf(v)
	for _, seg := range splitPath(rel) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch {
		case t.Kind() == reflect.Slice && strings.HasPrefix(seg, "["):
			t = t.Elem()
		case t.Kind() == reflect.Map:
			t = t.Elem()
		case t.Kind() == reflect.Struct:
			f, ok := structField(t, seg)
			if !ok {
				return nil
			}
			t = f.Type
		default:
			return nil
		}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	return Names(t)
}

// splitPath splits ".a.b[2].c" into "a", "b", "[2]", "c".
func splitPath(p string) []string {
	var segs []string
	for p != "" {
		switch p[0] {
		case '.':
			p = p[1:]
		case '[':
			i := strings.IndexByte(p, ']')
			if i < 0 {
				return append(segs, p)
			}
			segs = append(segs, p[:i+1])
			p = p[i+1:]
		default:
			i := strings.IndexAny(p, ".[")
			if i < 0 {
				return append(segs, p)
			}
			segs = append(segs, p[:i])
			p = p[i:]
		}
	}
	return segs
}

// Names returns the YAML names of a struct's fields, inline ones
// included, in declaration order.
func Names(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case name == "-" || !f.IsExported():
		case opts == "inline":
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			names = append(names, Names(ft)...)
		case name != "":
			names = append(names, name)
		}
	}
	return names
}

// structField finds the field of t named name in YAML, looking into
// inline fields.
func structField(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		n, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if opts == "inline" {
			if sf, ok := structField(f.Type, name); ok {
				return sf, true
			}
		}
		if n == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// PathOf turns the path of a field in Go terms, such as
// "Retry.MaxAttempts" or "Servers[1]", into the path in the file of the
// same field of v: ".retry.max_attempts", ".servers[1]". The fields of v
// carry the Go names of the library config they map onto, and yaml tags;
// inline fields are looked into. It stops at the first part that v has no
// field for, so that an error lands on the nearest enclosing field ("" for
// v itself).
func PathOf(v any, goPath string) string {
	t := reflect.TypeOf(v)
	var out strings.Builder
	for _, seg := range splitPath(goPath) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if strings.HasPrefix(seg, "[") {
			if t.Kind() != reflect.Slice && t.Kind() != reflect.Map {
				break
			}
			out.WriteString(seg)
			t = t.Elem()
			continue
		}
		if t.Kind() != reflect.Struct {
			break
		}
		f, ok := goField(t, seg)
		if !ok {
			break
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		out.WriteString("." + name)
		t = f.Type
	}
	return out.String()
}

// goField finds the field of t named name in Go that the file names,
// looking into inline fields.
func goField(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		n, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if opts == "inline" {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if sf, ok := goField(ft, name); ok {
				return sf, true
			}
		}
		if f.Name == name && n != "" && n != "-" {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// describe names what a Go type expects, in words for a config file.
func describe(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping (key: value lines)"
	}
	return t.String()
}

func shapeName(t ast.NodeType) string {
	switch t {
	case ast.MappingType, ast.MappingValueType:
		return "a mapping (key: value lines)"
	case ast.SequenceType:
		return "a list"
	case ast.StringType, ast.LiteralType:
		return "a string"
	case ast.IntegerType, ast.FloatType:
		return "a number"
	case ast.NullType:
		return "nothing"
	}
	return strings.ToLower(t.String())
}

// envRef matches what expandEnv replaces: $$, ${NAME} and ${NAME:-default}.
var envRef = regexp.MustCompile(`\$\$|\$\{([^}]*)\}`)

// envName is a valid environment variable name.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ExpandEnv replaces ${NAME} in every string value of the file (not in
// keys) with the variable's value. ${NAME:-default} gives a default for an
// unset or empty variable, and $$ is a literal $. An unset variable
// without a default is an error naming the field and the variable.
func ExpandEnv(n ast.Node, lookup func(string) (string, bool)) error {
	switch v := n.(type) {
	case nil:
		return nil
	case *ast.DocumentNode:
		return ExpandEnv(v.Body, lookup)
	case *ast.MappingNode:
		for _, mv := range v.Values {
			if err := ExpandEnv(mv.Value, lookup); err != nil {
				return err
			}
		}
	case *ast.MappingValueNode:
		return ExpandEnv(v.Value, lookup)
	case *ast.SequenceNode:
		for _, e := range v.Values {
			if err := ExpandEnv(e, lookup); err != nil {
				return err
			}
		}
	case *ast.TagNode:
		return ExpandEnv(v.Value, lookup)
	case *ast.AnchorNode:
		return ExpandEnv(v.Value, lookup)
	case *ast.LiteralNode:
		return ExpandEnv(v.Value, lookup)
	case *ast.StringNode:
		if !strings.Contains(v.Value, "$") {
			return nil
		}
		var err error
		v.Value = envRef.ReplaceAllStringFunc(v.Value, func(m string) string {
			if m == "$$" {
				return "$"
			}
			ref := m[2 : len(m)-1]
			name, def, hasDef := strings.Cut(ref, ":-")
			if !envName.MatchString(name) {
				if err == nil {
					err = &FieldError{Path: nodePath(v), Pos: v.GetToken().Position,
						Msg: fmt.Sprintf("%s is not a valid variable reference: write ${NAME} or ${NAME:-default} (and $$ for a literal $)", m)}
				}
				return m
			}
			val, ok := lookup(name)
			if ok && (val != "" || !hasDef) {
				return val
			}
			if hasDef {
				return def
			}
			if err == nil {
				err = &FieldError{Path: nodePath(v), Pos: v.GetToken().Position,
					Msg: fmt.Sprintf("environment variable %s is not set: export it, or write ${%s:-default}", name, name)}
			}
			return m
		})
		return err
	}
	return nil
}

// SortedKeys returns the keys of a map in order, for stable errors.
func SortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// QuoteList formats names as "a", "b" and "c".
func QuoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

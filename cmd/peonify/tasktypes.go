package main

import (
	"errors"
	"io"

	"github.com/goccy/go-yaml/ast"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
	"github.com/peonify/peonify/internal/executor"
)

// executorKinds is the table of built-in executors a task type can use,
// from the executor: field to the type that decodes the other fields.
var executorKinds = map[string]struct {
	summary string
	new     func() taskSpec
}{
	"http": {"POST the payload to a URL; 2xx is done", func() taskSpec { return new(httpTask) }},
	"exec": {"run a command with the payload on stdin; exit 0 is done", func() taskSpec { return new(execTask) }},
}

// taskSpec is one task type of the tasks map, decoded for its executor.
type taskSpec interface {
	common() *taskCommon
	// handler builds the executor. stdout receives what commands print.
	handler(stdout io.Writer) (peonify.Handler, func(), error)
}

// taskCommon are the fields every task type has.
type taskCommon struct {
	Executor string `yaml:"executor"` // required: a key of executorKinds

	path string // "tasks.email", for errors
}

func (t *httpTask) common() *taskCommon { return &t.Common }
func (t *execTask) common() *taskCommon { return &t.Common }

// decodeTask decodes one task type by its executor and checks that its
// executor can be built.
func decodeTask(n ast.Node, path string) (taskSpec, error) {
	if _, ok := n.(*ast.MappingNode); !ok {
		if _, ok := n.(*ast.MappingValueNode); !ok {
			return nil, &yamlfile.FieldError{Path: path, Pos: n.GetToken().Position, Msg: "want a mapping with executor: and the executor's fields"}
		}
	}
	var head struct {
		Executor string `yaml:"executor"`
	}
	if err := yamlfile.DecodeLoose(n, &head); err != nil {
		return nil, err
	}
	kind, ok := executorKinds[head.Executor]
	if !ok {
		if head.Executor == "" {
			return nil, yamlfile.Errorf(path+".executor", "required: one of %s", yamlfile.QuoteList(yamlfile.SortedKeys(executorKinds)))
		}
		return nil, yamlfile.Errorf(path+".executor", "unknown executor %q: use one of %s", head.Executor, yamlfile.QuoteList(yamlfile.SortedKeys(executorKinds)))
	}
	t := kind.new()
	if err := yamlfile.DecodeStrict(n, t); err != nil {
		return nil, err
	}
	t.common().path = path
	_, closeFn, err := t.handler(io.Discard)
	if err != nil {
		return nil, err
	}
	closeFn()
	return t, nil
}

// fieldOf turns an executor's *executor.FieldError into a *yamlfile.FieldError
// under path.
func fieldOf(path string, err error) error {
	var fe *executor.FieldError
	if errors.As(err, &fe) {
		return yamlfile.Errorf(yamlfile.Join(path, fe.Field), "%s", fe.Reason)
	}
	return yamlfile.Errorf(path, "%v", err)
}

// httpTask is a task type run by the http executor.
type httpTask struct {
	Common              taskCommon `yaml:",inline"`
	executor.HTTPConfig `yaml:",inline"`
}

func (t *httpTask) handler(io.Writer) (peonify.Handler, func(), error) {
	h, err := executor.NewHTTP(t.HTTPConfig)
	if err != nil {
		return nil, nil, fieldOf(t.Common.path, err)
	}
	return h, h.Close, nil
}

// execTask is a task type run by the exec executor.
type execTask struct {
	Common              taskCommon `yaml:",inline"`
	executor.ExecConfig `yaml:",inline"`
	Stdout              string `yaml:"stdout"` // discard (default), inherit or result
}

func (t *execTask) handler(stdout io.Writer) (peonify.Handler, func(), error) {
	cfg := t.ExecConfig
	// Each command's process group dies with peonify, even by SIGKILL:
	// main runs the supervisor.
	cfg.Supervise = true
	switch t.Stdout {
	case "", "discard":
	case "inherit":
		cfg.Stdout = stdout
	case "result":
		cfg.StdoutResult = true
	default:
		return nil, nil, yamlfile.Errorf(t.Common.path+".stdout", "%q is not a choice: use discard (the default), inherit (peonify's own stdout) or result (the task's result, kept by sqlite, postgres and redis stores)", t.Stdout)
	}
	e, err := executor.NewExec(cfg)
	if err != nil {
		return nil, nil, fieldOf(t.Common.path, err)
	}
	return e, func() {}, nil
}

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/cmd/peonify/internal/yamlfile"
	"github.com/peonify/peonify/streams/webhookstream"
)

// This file holds the push intakes of the streams list: webhook,
// websocket and mqtt entries. An intake is not polled: it takes tasks from
// outside and writes each into a store of the same file (its store:
// field) before it acknowledges the sender, and the processor runs them
// from there. The processor starts intakes with Run and stops them first
// at shutdown.

// intakeSpec is an entry of the streams list that is a push intake.
type intakeSpec interface {
	streamSpec
	// storeField is the entry's store: field, set to the store's name once
	// the file is checked.
	storeField() *string
	// keyFromField is the entry's key_from: field.
	keyFromField() string
	// taskTypes lists the task types the intake gives its tasks, with the
	// path of the field that names each; none when producers choose.
	taskTypes() []typeRef
	// intake builds the intake over store. HTTP intakes listen at once,
	// so that a port in use shows before the processor starts.
	intake(store peonify.Enqueuer, w *wiring) (peonify.Intake, error)
}

// httpIntake is an intake that serves HTTP on its own address.
type httpIntake interface {
	intakeSpec
	server() *serverFields
}

// storeDefaulter is an intake that sets defaults of its store's fields
// the store's entry leaves unset.
type storeDefaulter interface {
	intakeSpec
	defaultStore(store storeSpec)
}

// storeWarner is an intake that warns, at start-up, of a store it works
// poorly with: storeWarning returns the log message, or "".
type storeWarner interface {
	intakeSpec
	storeWarning(store storeSpec) string
}

// syncIntake is an intake that may answer with its tasks' results, which
// needs the processor's middleware.
type syncIntake interface {
	intakeSpec
	sync() bool
}

// typeRef is a task type named by a field of the file.
type typeRef struct{ path, typ string }

// wiring is what the intakes of one run share with the processor.
type wiring struct {
	log *slog.Logger
	// results is the registry of synchronous webhook routes, nil when the
	// file has none; its middleware is in the processor.
	results *webhookstream.Results
	// ready lists the checks of /readyz that intakes add.
	ready []readyCheck
	// closers release what intakes built before the processor ran them
	// (listeners); calling them again after a run is harmless.
	closers []func()
}

// readyCheck is one condition of /readyz: nil when ready.
type readyCheck struct {
	name  string
	check func() error
}

// intakeCommon are the fields every intake entry has besides its kind's.
type intakeCommon struct {
	Name  string `yaml:"name"`  // defaults to the kind
	Kind  string `yaml:"kind"`  // required: the name of one of kinds()
	Store string `yaml:"store"` // the store it writes into; required when the file has several
	// KeyFrom derives Task.Key for tasks that arrive without one:
	// "header:NAME" or "json:PATH" (see parseKeyFrom).
	KeyFrom string `yaml:"key_from"`

	c streamCommon // name, kind and path, filled by decodeStream
}

func (ic *intakeCommon) common() *streamCommon { return &ic.c }
func (ic *intakeCommon) storeField() *string   { return &ic.Store }
func (ic *intakeCommon) keyFromField() string  { return ic.KeyFrom }

// parseKeyFrom turns an intake's key_from: into the function that derives
// a task's key: "header:NAME" takes the task header NAME, "json:PATH" the
// field PATH (dotted for nested objects) of the JSON payload. "" is none.
func parseKeyFrom(s string) (peonify.KeyFunc, error) {
	how, arg, _ := strings.Cut(s, ":")
	switch {
	case s == "":
		return nil, nil
	case how == "header" && arg != "" && !strings.ContainsAny(arg, " \t\r\n:"):
		return peonify.HeaderKey(arg), nil
	case how == "json" && arg != "" && !strings.Contains(arg, "..") && !strings.HasPrefix(arg, ".") && !strings.HasSuffix(arg, "."):
		return peonify.JSONKey(arg), nil
	}
	return nil, fmt.Errorf("%q is not header:NAME or json:PATH (e.g. header:X-Tenant, json:account.id)", s)
}

// intakeStopTimeout bounds how long an HTTP intake waits, at shutdown,
// for the requests it is answering.
const intakeStopTimeout = 10 * time.Second

// serverFields are the fields of an intake that serves HTTP.
type serverFields struct {
	Listen  string `yaml:"listen"`   // required: host:port
	TLSCert string `yaml:"tls_cert"` // serve HTTPS with this certificate (PEM) ...
	TLSKey  string `yaml:"tls_key"`  // ... and this private key (PEM)
}

func (sf *serverFields) check(path string) error {
	if sf.Listen == "" {
		return yamlfile.Errorf(path+".listen", "required: the address to serve on, e.g. :8080 or 127.0.0.1:8080")
	}
	if err := checkListen(sf.Listen); err != nil {
		return yamlfile.Errorf(path+".listen", "%v", err)
	}
	switch {
	case sf.TLSCert != "" && sf.TLSKey == "":
		return yamlfile.Errorf(path+".tls_key", "required with tls_cert: the certificate's private key file (PEM)")
	case sf.TLSKey != "" && sf.TLSCert == "":
		return yamlfile.Errorf(path+".tls_cert", "required with tls_key: the certificate file (PEM)")
	case sf.TLSCert != "":
		if _, err := tls.LoadX509KeyPair(sf.TLSCert, sf.TLSKey); err != nil {
			return yamlfile.Errorf(path+".tls_cert", "cannot load the certificate and key: %v", err)
		}
	}
	return nil
}

// checkListen validates a host:port address to listen on.
func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (write :8080 for every interface, 127.0.0.1:8080 for this machine only)", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has no port number from 0 to 65535", addr)
	}
	return nil
}

// serve returns an intake that serves srv on a listener opened now, and
// stops it with stop (if any) and then srv.Shutdown when its ctx ends.
func (sf *serverFields) serve(w *wiring, kind, name string, srv *http.Server, stop func(context.Context) error) (peonify.Intake, error) {
	what := kind + " intake " + strconv.Quote(name)
	ln, err := net.Listen("tcp", sf.Listen)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	w.closers = append(w.closers, func() { _ = ln.Close() })
	scheme := "http"
	if sf.TLSCert != "" {
		scheme = "https"
	}
	w.log.Info("peonify: intake listening", "kind", kind, "intake", name, "addr", scheme+"://"+ln.Addr().String())
	srv.ErrorLog = slog.NewLogLogger(w.log.Handler(), slog.LevelDebug)
	return peonify.IntakeFunc(func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() {
			if sf.TLSCert != "" {
				errc <- srv.ServeTLS(ln, sf.TLSCert, sf.TLSKey)
			} else {
				errc <- srv.Serve(ln)
			}
		}()
		select {
		case err := <-errc:
			return fmt.Errorf("%s: %w", what, err)
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), intakeStopTimeout)
		defer cancel()
		var errs []error
		if stop != nil {
			errs = append(errs, stop(sctx))
		}
		if err := srv.Shutdown(sctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: requests still open after %s: %w", what, intakeStopTimeout, err))
			_ = srv.Close()
		}
		<-errc
		return errors.Join(errs...)
	}), nil
}

// resendFields are the fields of the intakes that recognise resends
// themselves (websocket, mqtt).
type resendFields struct {
	ResendWindow yamlfile.Duration `yaml:"resend_window"`  // defaults to 24h; negative: off
	ResendLog    string            `yaml:"resend_log"`     // defaults to a file next to the store, see defaultResendLog
	ResendMaxIDs int               `yaml:"resend_max_ids"` // defaults to 1000000
}

func (rf *resendFields) check(path string) error {
	if rf.ResendMaxIDs < 0 {
		return yamlfile.Errorf(path+".resend_max_ids", "must not be negative (0 means the default, 1000000)")
	}
	if rf.ResendLog != "" && rf.ResendWindow < 0 {
		return yamlfile.Errorf(path+".resend_log", "is set but resend_window is negative (off): remove one of them")
	}
	return nil
}

// resendIntake is an intake with resendFields.
type resendIntake interface {
	intakeSpec
	resends() *resendFields
}

// defaultResendLog is where an intake named name records the IDs it
// stored when resend_log is not set: next to the database of a SQLite
// store, else in the working directory (where a relative SQLite path is
// too).
func defaultResendLog(name string, store streamSpec) string {
	name = unsafeFileChars.ReplaceAllString(name, "_")
	if st, ok := store.(interface{ file() string }); ok {
		return st.file() + "-" + name + ".resends"
	}
	return "peonify-" + name + ".resends"
}

var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

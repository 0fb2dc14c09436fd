package resend

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/peonify/peonify"
)

// The defaults of an intake's resend window: its Config.ResendWindow and
// Config.ResendMaxIDs.
const (
	DefaultWindow = 24 * time.Hour
	DefaultMaxIDs = 1_000_000
)

// Config is the resend window of an intake: the ResendWindow, ResendLog
// and ResendMaxIDs fields of its Config, which every intake with a window
// documents, checks and opens the same way.
type Config struct {
	Intake string // the intake's package, such as "wsstream", which errors and logs name
	Resend string // what the intake's users call a task sent again: "resend" or "redelivery"

	Window time.Duration // Config.ResendWindow: 0 means DefaultWindow, negative turns the window off
	Path   string        // Config.ResendLog: the file, or none
	MaxIDs int           // Config.ResendMaxIDs: 0 means DefaultMaxIDs
}

// Check reports whether c is valid: nil, or a *peonify.ConfigError naming
// the intake's Config field at fault.
func (c Config) Check() error {
	switch {
	case c.MaxIDs < 0:
		return &peonify.ConfigError{Field: c.Intake + ".Config.ResendMaxIDs", Reason: fmt.Sprintf("must not be negative (0 means the default, %d)", DefaultMaxIDs)}
	case c.Path != "" && c.Window < 0:
		return &peonify.ConfigError{Field: c.Intake + ".Config.ResendLog", Reason: "is set but ResendWindow is negative (off): remove one of them"}
	}
	return nil
}

// Window is an intake's resend window, open: the IDs the intake stored,
// remembered in a Log. A nil *Window is a window turned off, which has
// seen nothing and records nothing. Its methods are safe for concurrent
// use.
type Window struct {
	log    *Log
	cfg    Config
	logger *slog.Logger
	failed atomic.Bool // a Record failed, which is logged once
}

// OpenWindow opens the window c describes, reading c.Path if set; it
// returns nil, and no error, when c turns the window off. logger receives
// the first failure to write the file.
func OpenWindow(c Config, logger *slog.Logger) (*Window, error) {
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.MaxIDs == 0 {
		c.MaxIDs = DefaultMaxIDs
	}
	if c.Window < 0 {
		return nil, nil
	}
	l, err := Open(c.Path, c.Window, c.MaxIDs, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: Config.ResendLog: %w", c.Intake, err)
	}
	return &Window{log: l, cfg: c, logger: logger}, nil
}

// Seen reports whether id was recorded within the window.
func (w *Window) Seen(id string) bool {
	return w != nil && w.log.Seen(id)
}

// Record remembers ids as stored, before their senders are told so. If
// the file cannot be written the tasks are still stored, so the intake
// acknowledges them anyway: the IDs are then remembered in memory only,
// and the failure is logged once.
func (w *Window) Record(ids ...string) {
	if w == nil {
		return
	}
	if err := w.log.Record(ids...); err != nil && !w.failed.Swap(true) {
		w.logger.Error(w.cfg.Intake+": cannot write Config.ResendLog; from now on stored task IDs are remembered in memory only, and a "+
			w.cfg.Resend+" after a restart is recognised only while the store holds its task", "err", err)
	}
}

// Close closes the window's file.
func (w *Window) Close() error {
	if w == nil {
		return nil
	}
	if err := w.log.Close(); err != nil {
		return fmt.Errorf("%s: closing Config.ResendLog: %w", w.cfg.Intake, err)
	}
	return nil
}

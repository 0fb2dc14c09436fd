//go:build unix

package limittest

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain runs a child processor when the test binary is re-executed as
// one (see orders), and the tests otherwise.
func TestMain(m *testing.M) {
	if env := os.Getenv(childEnv); env != "" {
		os.Exit(runChild(env))
	}
	goleak.VerifyTestMain(m)
}

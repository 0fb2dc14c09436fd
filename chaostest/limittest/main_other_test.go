//go:build !unix

package limittest

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind. The scenarios
// need Unix signals and do not run here.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

//go:build !race

package limittest

// raceEnabled reports whether the tests run with the race detector.
const raceEnabled = false

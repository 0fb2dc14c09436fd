//go:build race

package chaostest

// raceEnabled reports whether the tests run with the race detector.
const raceEnabled = true

//go:build race

package sqlitestream

// raceEnabled is true under the race detector, which slows the transpiled
// SQLite down many times: the heavier tests then do less work.
const raceEnabled = true

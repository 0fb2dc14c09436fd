package main

import "fmt"

// The last line of every report compares the drain rates of Peonify and
// of tuned River, for scripts that track the ratio.
func Example_resultLine() {
	fmt.Println(resultLine("sqlite", "river", 48000, 3200))
	// Output: RESULT backend=sqlite peonify=48000 peer=river:3200 ratio=15.00
}

package intake

import (
	"slices"
	"testing"
)

// Batch takes what waits, up to the limit, and stops at a closed channel.
func TestBatch(t *testing.T) {
	ch := make(chan int, 10)
	for i := range 5 {
		ch <- i + 1
	}
	if b := Batch(0, ch, 3); !slices.Equal(b, []int{0, 1, 2}) {
		t.Fatalf("batch %v, want [0 1 2]", b)
	}
	if b := Batch(0, ch, 10); !slices.Equal(b, []int{0, 3, 4, 5}) {
		t.Fatalf("batch %v, want [0 3 4 5]", b)
	}
	ch <- 6
	close(ch)
	if b := Batch(0, ch, 10); !slices.Equal(b, []int{0, 6}) {
		t.Fatalf("batch %v, want [0 6]", b)
	}
}

package intake

// Batch returns first with the values already waiting in ch behind it, at
// most limit in all, without waiting for more: what a store can take in
// one call. It stops early at a closed ch.
func Batch[T any](first T, ch <-chan T, limit int) []T {
	b := []T{first}
	for len(b) < limit {
		select {
		case v, ok := <-ch:
			if !ok {
				return b
			}
			b = append(b, v)
		default:
			return b
		}
	}
	return b
}

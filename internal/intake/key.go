package intake

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/peonify/peonify"
)

// Key returns the Task.Key of a message: field, the key the message gives
// in a field of its own (a JSON "key"), or else the value of its
// peonify.KeyHeader header, spelled in any case, in headers. Key removes
// that header from headers, so that the key is not also a task header.
// The error, phrased for the sender, reports a key given both ways with
// different values, and one that is not valid UTF-8 or is longer than
// peonify.MaxKeyLen bytes.
func Key(field string, headers map[string]string) (string, error) {
	var name, header string
	for k, v := range headers {
		if strings.EqualFold(k, peonify.KeyHeader) {
			if name == "" || k < name {
				name, header = k, v
			}
			delete(headers, k)
		}
	}
	key := field
	switch {
	case field == "":
		key = header
	case name != "" && header != field:
		return "", fmt.Errorf("the key is given twice, with different values: %q, and %q in the %s header: give it once", field, header, peonify.KeyHeader)
	}
	switch {
	case len(key) > peonify.MaxKeyLen:
		return "", fmt.Errorf("the key is %d bytes, longer than %d: use a shorter identifier of what the task belongs to (a tenant or account ID)", len(key), peonify.MaxKeyLen)
	case !utf8.ValidString(key):
		return "", fmt.Errorf("the key is not valid UTF-8")
	}
	return key, nil
}

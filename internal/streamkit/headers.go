package streamkit

import "encoding/json"

// DecodeHeaders reads task headers stored as a JSON object of strings.
// Values that other producers stored as non-strings are kept as their
// JSON text; an empty or malformed object yields no headers (nil) rather
// than an undeliverable task.
func DecodeHeaders(b []byte) map[string]string {
	if len(b) == 0 {
		return nil
	}
	var raw map[string]json.RawMessage
	if json.Unmarshal(b, &raw) != nil || len(raw) == 0 {
		return nil
	}
	h := make(map[string]string, len(raw))
	for k, v := range raw {
		var str string
		if json.Unmarshal(v, &str) == nil {
			h[k] = str
		} else {
			h[k] = string(v)
		}
	}
	return h
}

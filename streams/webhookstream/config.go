package webhookstream

// Validate reports whether c can configure a Handler, without I/O: nil, or
// a *peonify.ConfigError whose Field names the field at fault in Go terms,
// such as "webhookstream.Config.MaxBodyBytes", a route by its path,
// "webhookstream.Config.Routes[\"/hooks/github\"]", or a field of a
// route's Verifier preset after it,
// "webhookstream.Config.Routes[\"/hooks/github\"].Verifier.Secrets[1]".
// New reports the same errors.
func (c Config) Validate() error { return c.validate() }

package webhookstream

// Validate reports whether c can configure a Handler, without I/O: nil, or
// a *peonify.ConfigError whose Field names the field at fault in Go terms,
// such as "webhookstream.Config.MaxBodyBytes", or a route by its path,
// "webhookstream.Config.Routes[\"/hooks/github\"]". New reports the same
// errors.
func (c Config) Validate() error { return c.validate() }

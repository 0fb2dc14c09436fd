package wsstream

// Validate reports whether c can configure a Handler, without I/O: nil, or
// a *peonify.ConfigError whose Field names the field at fault in Go terms,
// such as "wsstream.Config.MaxInFlight", or an element of a list by its
// index, "wsstream.Config.OriginPatterns[1]". New reports the same errors.
func (c Config) Validate() error { return c.validate() }

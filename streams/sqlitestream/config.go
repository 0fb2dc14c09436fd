package sqlitestream

// Validate reports whether c can configure a Stream, without I/O: nil, or
// a *peonify.ConfigError whose Field names the field at fault in Go terms,
// such as "sqlitestream.Config.Lease". Open reports the same errors before
// it opens the file.
func (c Config) Validate() error { return c.validate() }

package mqttstream

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/peonify/peonify"
	"github.com/peonify/peonify/internal/resend"
)

// Defaults of Config.
const (
	DefaultSessionExpiry  = 24 * time.Hour
	DefaultKeepAlive      = 30 * time.Second
	DefaultReceiveMaximum = 100
	DefaultConnectTimeout = 10 * time.Second
	DefaultEnqueueTimeout = 10 * time.Second
	DefaultMinBackoff     = 100 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
	DefaultResendWindow   = resend.DefaultWindow // 24h
	DefaultResendMaxIDs   = resend.DefaultMaxIDs // 1,000,000
)

// Config configures an Intake. Servers, ClientID and Routes are required;
// every other field has a working zero value.
type Config struct {
	// Servers are the broker addresses, tried in turn: mqtt:// or tcp://
	// (plain TCP, port 1883 by default), mqtts://, tls:// or ssl://
	// (TLS, port 8883 by default, see TLSConfig), ws:// or wss:// (MQTT
	// over WebSocket, with the path). A user and password in the URL are used when Username is
	// empty. Required.
	Servers []string

	// ClientID is the MQTT client identifier. It must be stable across
	// restarts, because the broker keeps this intake's session (its
	// subscriptions and the messages that arrive while it is away) under
	// it, and unique among the broker's clients: two clients with one ID
	// disconnect each other. With shared subscriptions give each intake
	// its own ID, such as "peonify-" plus the host name. Required.
	ClientID string

	// Routes maps topic filters to task types: a message on a topic that
	// matches a filter becomes a task of that type. Filters use the MQTT
	// wildcards + (one level) and # (the rest), and must not overlap: no
	// topic may match two of them. A filter may be written as a shared
	// subscription, "$share/<group>/<filter>". Required.
	Routes map[string]string

	// ShareGroup, when set, subscribes to every route as the shared
	// subscription "$share/<ShareGroup>/<filter>", so that the intakes of
	// several processors that use the same group split the messages
	// between them rather than each receiving all of them.
	ShareGroup string

	// Username and Password authenticate the connection. They default to
	// the user information of the Servers URL.
	Username string
	Password string

	// TLSConfig is used for mqtts://, tls://, ssl:// and wss:// servers.
	// Defaults to the system's roots.
	TLSConfig *tls.Config

	// SessionExpiry is how long the broker keeps the session while the
	// intake is disconnected; messages published meanwhile at QoS 1 wait
	// for it. Defaults to DefaultSessionExpiry (24h); at least a second.
	SessionExpiry time.Duration

	// KeepAlive is the MQTT keep-alive interval: the broker drops a
	// connection silent for 1.5 times as long, and the client pings.
	// Defaults to DefaultKeepAlive (30s).
	KeepAlive time.Duration

	// ReceiveMaximum is how many QoS 1 messages the broker may send before
	// the intake acknowledges them: the intake's in-flight window, and
	// the most messages it holds in memory. Defaults to
	// DefaultReceiveMaximum (100); at most 65535.
	ReceiveMaximum int

	// ConnectTimeout bounds one connection attempt. Defaults to
	// DefaultConnectTimeout (10s).
	ConnectTimeout time.Duration

	// WaitForBroker makes Run keep trying, with backoff, when it cannot
	// connect at start-up, as it does whenever a connection is lost
	// later. Defaults to false: if every server of Servers fails once
	// (refused, unreachable within ConnectTimeout, or refusing the
	// credentials) before the first connection, Run returns a
	// *ConnectError, so that a wrong address or password shows at once.
	WaitForBroker bool

	// EnqueueTimeout bounds one Enqueue; a slower store counts as failed
	// and is tried again. Defaults to DefaultEnqueueTimeout (10s).
	EnqueueTimeout time.Duration

	// MinBackoff and MaxBackoff bound the waits, doubling with jitter,
	// between reconnection attempts and between retries of an Enqueue the
	// store refused. They default to DefaultMinBackoff (100ms) and
	// DefaultMaxBackoff (30s).
	MinBackoff time.Duration
	MaxBackoff time.Duration

	// ContentIDs, when set, gives a message without an "id" user property
	// or correlation data the task ID "mqtt-" plus a hash of its topic,
	// payload and properties, instead of a new random ID. A redelivery of
	// the same message is then recognised as a duplicate and not stored
	// twice, but so is a second, distinct message with the same content
	// within ResendWindow or while the first task is still in the store.
	// See the package documentation.
	ContentIDs bool

	// ResendWindow is how long after a message's task was stored a
	// redelivery or a republish of the message with the same ID (its "id"
	// user property, its correlation data, or its content with
	// ContentIDs) is recognised, acknowledged and not stored again,
	// whatever the store keeps: also after the task ran and the store
	// deleted it (sqlitestream or pgstream without KeepDone), and in a
	// store that does not detect duplicates (RabbitMQ). The intake
	// remembers the IDs itself, in memory and in ResendLog. Messages
	// without an ID get a new one each time, so their redeliveries cannot
	// be recognised. Defaults to DefaultResendWindow (24h), as long as the
	// default SessionExpiry, for which the broker may redeliver a message
	// whose acknowledgement was lost; negative turns this off, and then
	// only the store detects duplicates, for as long as it keeps the
	// task's ID.
	ResendWindow time.Duration

	// ResendLog is the file in which the intake records the IDs it
	// stored, synced before each acknowledgement, so that the
	// ResendWindow holds across restarts and crashes. One intake per file.
	// Defaults to none: the IDs are remembered while Run runs, and after
	// a restart a redelivery is recognised only while the store still
	// holds the task.
	ResendLog string

	// ResendMaxIDs is the most IDs remembered (about 80 bytes of memory
	// and 24 bytes of ResendLog each); beyond it the oldest are forgotten
	// before their ResendWindow ends. Defaults to DefaultResendMaxIDs
	// (1,000,000: a day's window at 11 messages a second).
	ResendMaxIDs int

	// Logger receives the intake's logs. Defaults to slog.Default().
	Logger *slog.Logger
}

// schemes are the URL schemes the MQTT client can dial.
var schemes = []string{"mqtt", "tcp", "mqtts", "tls", "ssl", "tcps", "mqtt+ssl", "ws", "wss"}

// Validate reports whether c can configure an Intake, without I/O: nil,
// or a *peonify.ConfigError whose Field names the field at fault in Go
// terms, such as "mqttstream.Config.ClientID", or an element of a list by
// its index, "mqttstream.Config.Servers[1]". New reports the same errors.
func (c Config) Validate() error { return c.validate() }

func (c Config) validate() error {
	bad := func(field, format string, args ...any) error {
		return &peonify.ConfigError{Field: "mqttstream.Config." + field, Reason: fmt.Sprintf(format, args...)}
	}
	if len(c.Servers) == 0 {
		return bad("Servers", "required: the broker's address, e.g. mqtt://localhost:1883")
	}
	for i, s := range c.Servers {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return bad(fmt.Sprintf("Servers[%d]", i), "%q is not a URL with a host, e.g. mqtt://localhost:1883", redact(s))
		}
		if !slices.Contains(schemes, strings.ToLower(u.Scheme)) {
			return bad(fmt.Sprintf("Servers[%d]", i), "scheme %q is not one of %s", u.Scheme, strings.Join(schemes, ", "))
		}
	}
	switch {
	case c.ClientID == "":
		return bad("ClientID", "required: a stable, unique client ID, so that the broker keeps this intake's session across restarts")
	case len(c.ClientID) > 65535 || !utf8.ValidString(c.ClientID):
		return bad("ClientID", "must be UTF-8 of at most 65535 bytes")
	case len(c.Routes) == 0:
		return bad("Routes", "required: map at least one topic filter to a task type, e.g. {\"devices/+/events\": \"device-event\"}")
	case strings.ContainsAny(c.ShareGroup, "/+#"):
		return bad("ShareGroup", "%q must not contain /, + or #", c.ShareGroup)
	case c.SessionExpiry < 0 || (c.SessionExpiry > 0 && c.SessionExpiry < time.Second):
		return bad("SessionExpiry", "must be at least 1s (0 means the default, 24h): a session that ends with the connection loses the messages published while the intake is away")
	case c.SessionExpiry > time.Duration(math.MaxUint32-1)*time.Second:
		return bad("SessionExpiry", "must be at most %d seconds", uint32(math.MaxUint32-1))
	case c.KeepAlive < 0 || c.KeepAlive > 65535*time.Second:
		return bad("KeepAlive", "must be between 0 (the default, 30s) and 65535s")
	case c.ReceiveMaximum < 0 || c.ReceiveMaximum > 65535:
		return bad("ReceiveMaximum", "must be between 0 (the default, 100) and 65535")
	case c.ConnectTimeout < 0:
		return bad("ConnectTimeout", "must not be negative (0 means the default, 10s)")
	case c.EnqueueTimeout < 0:
		return bad("EnqueueTimeout", "must not be negative (0 means the default, 10s)")
	case c.MinBackoff < 0 || c.MaxBackoff < 0:
		return bad("MinBackoff", "backoffs must not be negative (0 means the defaults, 100ms and 30s)")
	}
	if err := c.resendConfig().Check(); err != nil {
		return err
	}
	var filters []string
	for f, typ := range c.Routes {
		group, filter := splitShare(f)
		if err := checkFilter(filter); err != nil {
			return bad("Routes", "filter %q: %v", f, err)
		}
		if group != "" && c.ShareGroup != "" && group != c.ShareGroup {
			return bad("Routes", "filter %q names share group %q but ShareGroup is %q: use one of them", f, group, c.ShareGroup)
		}
		if typ == "" || len(typ) > peonify.MaxTypeLen {
			return bad("Routes", "filter %q maps to task type %q: a type is 1 to %d bytes", f, typ, peonify.MaxTypeLen)
		}
		filters = append(filters, filter)
	}
	slices.Sort(filters)
	for i, a := range filters {
		for _, b := range filters[i+1:] {
			if overlap(a, b) {
				return bad("Routes", "filters %q and %q both match some topics: make them disjoint, so that each message has one task type", a, b)
			}
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.SessionExpiry == 0 {
		c.SessionExpiry = DefaultSessionExpiry
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.ReceiveMaximum == 0 {
		c.ReceiveMaximum = DefaultReceiveMaximum
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.EnqueueTimeout == 0 {
		c.EnqueueTimeout = DefaultEnqueueTimeout
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	c.MaxBackoff = max(c.MaxBackoff, c.MinBackoff)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// resendConfig is the resend window that c configures.
func (c Config) resendConfig() resend.Config {
	return resend.Config{Intake: "mqttstream", Resend: "redelivery", Window: c.ResendWindow, Path: c.ResendLog, MaxIDs: c.ResendMaxIDs}
}

// redact hides the password of a URL for error messages.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(the given address)"
	}
	return u.Redacted()
}

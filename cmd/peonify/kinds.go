package main

import "slices"

// kind is a kind of entry of the streams list of a config file, which
// its kind: field names. Each kind is one file, kind_<name>.go, that holds
// its spec type (the entry's fields, their defaults and checks, how it
// opens the stream or builds the intake, its warnings) and returns its
// kind; kinds lists them. Adding a kind is writing that file and listing
// it there.
type kind struct {
	name string
	new  func() streamSpec
	// flag, when set, names a store of the kind on the command line of
	// enqueue and tasks, without a config file.
	flag *storeFlag
	// limits is set for kinds whose stores enforce the limits section in
	// their claims (peonify.Limiter).
	limits bool
	// tracks is set for kinds whose stores keep the state of their tasks
	// (peonify.Tracker: results, progress, cancellation) and run
	// workflows (peonify.WorkflowStore).
	tracks bool
}

// kinds returns the kinds of the streams list, in the order that
// messages list their flags. It is the one table of them.
func kinds() []kind {
	return []kind{
		sqliteKind(), postgresKind(), redisKind(), natsKind(), amqpKind(),
		webhookKind(), websocketKind(), mqttKind(),
	}
}

// kindNamed returns the kind named name.
func kindNamed(name string) (kind, bool) {
	for _, k := range kinds() {
		if k.name == name {
			return k, true
		}
	}
	return kind{}, false
}

// kindNames returns the names of the kinds in order.
func kindNames() []string {
	var names []string
	for _, k := range kinds() {
		names = append(names, k.name)
	}
	slices.Sort(names)
	return names
}

// trackKinds returns the names of the kinds whose stores keep results,
// progress and cancellation and run workflows.
func trackKinds() []string {
	var names []string
	for _, k := range kinds() {
		if k.tracks {
			names = append(names, k.name)
		}
	}
	return names
}

// limitKinds returns the names of the kinds whose stores enforce limits.
func limitKinds() []string {
	var names []string
	for _, k := range kinds() {
		if k.limits {
			names = append(names, k.name)
		}
	}
	return names
}

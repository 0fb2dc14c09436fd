package main

import (
	"fmt"
	"os"
)

// The config file is checked before anything starts, and a mistake is
// reported with the field at fault.
func Example_configCheck() {
	_, err := parseConfig([]byte(`
streams:
  - kind: postgres
    queue: emails
tasks:
  email: {executor: http, url: "https://mailer.internal/send"}
`), os.LookupEnv)
	fmt.Println(err)
	// Output: streams[0].url: required: the database address, e.g. postgres://user:${PGPASSWORD}@db:5432/app
}

// The demo's sample tasks: 45% emails, 30% image resizes, 20% card
// charges that fail now and then, and 5% reports, some malformed.
func Example_demoTasks() {
	for _, i := range []int{0, 9, 15, 19, 39} {
		t := demoTask(i, "run1")
		fmt.Printf("%s %s %s\n", t.ID, t.Type, t.Payload)
	}
	// Output:
	// demo-run1-000000 send-email {"to":"user0@example.com","template":"welcome"}
	// demo-run1-000009 resize-image {"image":"img-9.png","width":640}
	// demo-run1-000015 charge-card {"order":15,"cents":1999}
	// demo-run1-000019 build-report {"rows":"all of them"}
	// demo-run1-000039 build-report {"rows":139}
}

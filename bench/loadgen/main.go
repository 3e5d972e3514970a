// loadgen simulates a fleet of Envoy ADS clients against an xDS server and measures how
// long a configuration change takes to reach, and be ACKed by, every affected client.
// `loadgen stub` is a trivially fast ADS server used to show the load generator's own limit.
// `loadgen fleet` spreads clients over several servers and follows them across reconnects.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen run|stub|fleet [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "run":
		runCmd(os.Args[2:])
	case "stub":
		stubCmd(os.Args[2:])
	case "fleet":
		fleetCmd(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

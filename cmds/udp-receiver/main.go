// udp-receiver receives a file from udpcast's udp-sender; it accepts the
// same flags as udpcast's udp-receiver.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "udp-receiver: not implemented yet")
	os.Exit(1)
}

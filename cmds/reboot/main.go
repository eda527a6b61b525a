// reboot flushes all writes to disk and restarts the machine at once.
//
// Synopsis:
//
//	reboot
package main

import (
	"log"

	"github.com/imgcast/imgcast/pkg/power"
)

func main() {
	if err := power.Do(power.Reboot); err != nil {
		log.Fatalf("reboot: %v", err)
	}
}

// poweroff flushes all writes to disk and turns the machine off at once.
//
// Synopsis:
//
//	poweroff
//
// Description:
//
//	Unlike u-root's poweroff it syncs first, so what a debug-shell
//	udp-receiver wrote to a disk is on the disk.
package main

import (
	"log"

	"github.com/imgcast/imgcast/pkg/power"
)

func main() {
	if err := power.Do(power.PowerOff); err != nil {
		log.Fatalf("poweroff: %v", err)
	}
}

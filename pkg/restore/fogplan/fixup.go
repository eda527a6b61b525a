package fogplan

import (
	"fmt"

	"github.com/imgcast/imgcast/pkg/restore/gptid"
	"github.com/imgcast/imgcast/pkg/restore/mkswap"
)

// Fixup does what FOS does to a disk after its data (restoreUUIDInformation
// and makeAllSwapSystems): the GPT's disk GUID and partition type/GUIDs
// from dN.partitions, then each swap area with its recorded UUID. d is the
// whole disk (or an image file of it). It returns what it did, for the
// log; the caller syncs.
func (dp *DiskPlan) Fixup(d gptid.Disk) ([]string, error) {
	var done []string
	if dp.GPT != nil {
		changed, err := gptid.Set(d, dp.Geometry.LogicalSectorSize, dp.GPT.DiskGUID, dp.GPT.Partitions)
		if err != nil {
			return done, fmt.Errorf("setting the GPT identifiers: %w", err)
		}
		done = append(done, changed...)
	}
	for _, s := range dp.Swaps {
		if err := mkswap.Make(d, s.Offset, s.Size, mkswap.Options{UUID: s.UUID}); err != nil {
			return done, fmt.Errorf("partition %d: %w", s.Partition, err)
		}
		uuid := s.UUID
		if uuid == "" {
			uuid = "a new UUID"
		}
		done = append(done, fmt.Sprintf("partition %d: swap area with %s", s.Partition, uuid))
	}
	return done, nil
}

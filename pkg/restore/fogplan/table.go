package fogplan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"

	"github.com/imgcast/imgcast/pkg/restore/gptid"
	"github.com/imgcast/imgcast/pkg/restore/sfdisk"
)

// ReadTable reads the partition table on a disk now, for a single-
// partition restore (which writes no table and so needs to know where
// the partition is): a GPT, or the primary partitions of a dos table.
// It returns nil and no error for a disk without a table.
func ReadTable(r io.ReaderAt, sectorSize int64) (*sfdisk.Dump, error) {
	mbr := make([]byte, 512)
	if _, err := r.ReadAt(mbr, 0); err != nil {
		return nil, fmt.Errorf("reading sector 0: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA {
		return nil, nil
	}
	protective := false
	for i := 0; i < 4; i++ {
		protective = protective || mbr[446+16*i+4] == 0xEE
	}
	if protective {
		t, err := gptid.Read(r, sectorSize)
		if err != nil {
			return nil, fmt.Errorf("the disk's GPT: %w", err)
		}
		d := &sfdisk.Dump{Label: "gpt", ID: t.DiskGUID, Unit: "sectors", SectorSize: int(sectorSize)}
		for n, e := range t.Entries {
			if e.Last < e.First {
				return nil, fmt.Errorf("the disk's GPT: partition %d ends before it starts", n)
			}
			d.Partitions = append(d.Partitions, sfdisk.Partition{Number: n, Start: e.First, Size: e.Last - e.First + 1, Type: e.Type, UUID: e.UUID})
		}
		sort.Slice(d.Partitions, func(i, j int) bool { return d.Partitions[i].Number < d.Partitions[j].Number })
		return d, nil
	}
	d := &sfdisk.Dump{Label: "dos", Unit: "sectors", SectorSize: int(sectorSize)}
	for i := 0; i < 4; i++ {
		e := mbr[446+16*i:]
		typ := e[4]
		start := uint64(binary.LittleEndian.Uint32(e[8:]))
		size := uint64(binary.LittleEndian.Uint32(e[12:]))
		if typ == 0 || size == 0 {
			continue
		}
		if start == 0 {
			return nil, errors.New("the disk's dos table has a partition at sector 0")
		}
		d.Partitions = append(d.Partitions, sfdisk.Partition{
			Number: i + 1, Start: start, Size: size, Type: strconv.FormatUint(uint64(typ), 16), Bootable: e[0] == 0x80,
		})
	}
	return d, nil
}

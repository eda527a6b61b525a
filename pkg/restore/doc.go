// Package restore decodes partition images (partclone, gzip, zstd, raw),
// restores partition tables and writes partitions to disks.
package restore

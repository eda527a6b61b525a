// Package restore writes disk images to disks: partition images (partclone
// formats 0001/0002, or raw streams, compressed with gzip, zstd, xz, lz4,
// bzip2 or not at all) streamed from any io.Reader, and whole FOG-style
// image folders (dN.partitions, dN.mbr, dNpM.img…) with their partition
// table. With a public key, a folder's signed manifest (package manifest)
// is verified before the table is written, and every 4 MiB chunk of every
// image before it is decompressed. A disk restore that fails after writing
// wipes what it wrote (Plan.Wipe), so the disk cannot pass for imaged.
//
// Everything streams: the input is never seeked, never buffered whole and
// never spilled to a temporary file. Decompression, decoding with checksum
// verification, and writing run in three goroutines joined by a few MiB of
// buffers, so a fast disk is kept busy.
//
// Nothing is written before the image header, the partition table and the
// sizes have been checked. Errors can be told apart with errors.Is and
// errors.As: ErrChecksum (ChecksumError names the blocks), ErrTruncated,
// ErrDoesNotFit (FitError), ErrSectorSize, ErrDigest (DigestError),
// ErrNotPartclone, ErrCorrupt, ErrCompression; manifest.ErrManifest and
// manifest.ErrChunk for signed images; PartitionError names the partition.
//
// The pieces live in subpackages: partclone (image decoding), decompress
// (format sniffing), sfdisk (dump parsing), ptable (tables with go-diskfs)
// and imagedir (local and HTTP image folders).
package restore

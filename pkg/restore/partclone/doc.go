// Package partclone decodes partclone images (formats 0001 and 0002) from a
// stream: the descriptor, the block bitmap and the data section with its
// interleaved checksums (none, CRC32, XXH64, XXH128, and format 0001's
// defective CRC). It never seeks its input and never writes anything: a
// Reader hands out batches of verified used blocks together with the block
// numbers they belong at, and the caller decides where to write them.
//
// The format is described in shared/docs/partclone-format.md; section
// numbers in comments refer to it.
package partclone

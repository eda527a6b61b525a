// Package partclone decodes partclone images (formats 0001 and 0002) from a
// stream: the descriptor, the block bitmap and the data section with its
// interleaved checksums (none, CRC32, XXH64, XXH128, and format 0001's
// defective CRC). It never seeks its input and never writes anything: a
// Reader hands out batches of verified used blocks together with the block
// numbers they belong at, and the caller decides where to write them.
//
// The format is partclone's own, defined by its source (src/partclone.h
// and src/checksum.c at https://github.com/Thomas-Tsai/partclone); the
// comments state each rule of it the decoder relies on.
package partclone

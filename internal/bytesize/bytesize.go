// Package bytesize formats byte counts for people, the one way every
// imgcast message does: binary units, one decimal unless the value is
// whole ("512 B", "64 MiB", "1.5 GiB", "465.8 GiB").
package bytesize

import "fmt"

// Format formats n bytes; negative counts (unknown sizes) read "0 B".
func Format[T ~int | ~int64 | ~uint64](n T) string {
	if n < 0 {
		n = 0
	}
	v := uint64(n)
	const unit = 1024
	if v < unit {
		return fmt.Sprintf("%d B", v)
	}
	div, exp := uint64(unit), 0
	for m := v / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	f := float64(v) / float64(div)
	suffix := "KMGTPE"[exp : exp+1]
	if f == float64(uint64(f)) {
		return fmt.Sprintf("%d %siB", uint64(f), suffix)
	}
	return fmt.Sprintf("%.1f %siB", f, suffix)
}

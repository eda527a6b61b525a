package imaging

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/imgcast/imgcast/internal/bytesize"
	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/imgcast/imgcast/pkg/restore"
)

// progressBar draws one partition's progress on the console: redrawn in
// place on a terminal, a line every few seconds otherwise (logs, pipes).
type progressBar struct {
	w        io.Writer
	tty      bool
	label    string
	lastLine time.Time
	drawn    bool
}

const barWidth = 24

func newProgressBar(w io.Writer, tty bool, label string) *progressBar {
	return &progressBar{w: w, tty: tty, label: label}
}

func (b *progressBar) draw(done, total int64, wire, disk float64, eta time.Duration) {
	if b.w == nil {
		return
	}
	if !b.tty && time.Since(b.lastLine) < 5*time.Second && b.drawn {
		return
	}
	b.lastLine = time.Now()
	b.drawn = true
	line := formatProgress(b.label, done, total, wire, disk, eta)
	if b.tty {
		fmt.Fprintf(b.w, "\r%s\x1b[K", line)
	} else {
		fmt.Fprintln(b.w, line)
	}
}

func (b *progressBar) finish() {
	if b.w != nil && b.tty && b.drawn {
		fmt.Fprintln(b.w)
	}
}

// formatProgress renders e.g.
// "d1p1 [#########...............]  38%  1.2 GiB/3.1 GiB  wire 112.0 MB/s  disk 230.5 MB/s  ETA 0:17".
func formatProgress(label string, done, total int64, wire, disk float64, eta time.Duration) string {
	var sb strings.Builder
	sb.WriteString(label)
	if total > 0 {
		frac := min(1, float64(done)/float64(total))
		fill := int(frac * barWidth)
		fmt.Fprintf(&sb, " [%s%s] %3.0f%%  %s/%s", strings.Repeat("#", fill), strings.Repeat(".", barWidth-fill),
			100*frac, bytesize.Format(done), bytesize.Format(total))
	} else {
		fmt.Fprintf(&sb, " %s", bytesize.Format(done))
	}
	fmt.Fprintf(&sb, "  wire %5.1f MB/s  disk %5.1f MB/s", wire/1e6, disk/1e6)
	if eta > 0 {
		s := int(eta.Round(time.Second).Seconds())
		fmt.Fprintf(&sb, "  ETA %d:%02d", s/60, s%60)
	}
	return sb.String()
}

// printSummary tells the operator what is about to happen.
func (j *job) printSummary(di *restore.DiskImage, images []restore.PlannedPartition, disk inventory.Disk, size, sectorSize int64) {
	var total int64
	names := make([]string, 0, len(images))
	for _, pp := range images {
		total += pp.Image.Size()
		names = append(names, pp.Image.Name)
	}
	j.printf("Image: %s table, %d partitions, %d with images (%s, %s)\n", di.Dump.Label, len(di.Dump.Partitions),
		len(images), strings.Join(names, " "), bytesize.Format(total))
	if di.Sums != nil {
		j.printf("Image: every piece is checked against d1.sha256\n")
	}
	j.printf("Disk:  %s, %d-byte sectors — everything on it will be overwritten\n", diskLine(disk, size), sectorSize)
}

// diskLine names the disk with its model and serial, and the size as
// opened (an image file's inventory knows no more than its path).
func diskLine(d inventory.Disk, size int64) string {
	d.SizeBytes = uint64(max(size, 0))
	return d.String()
}

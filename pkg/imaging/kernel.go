package imaging

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// kernelPartitions lists the partitions the kernel knows of a block
// device (vda1, vda2, …) from sysfs under root; ok is false when path is
// not a block device.
func kernelPartitions(root, path string) (parts []string, ok bool) {
	st, err := os.Stat(path)
	if err != nil || st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
		return nil, false
	}
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		resolved = path
	}
	name := filepath.Base(resolved)
	entries, err := os.ReadDir(filepath.Join(root, "sys", "class", "block", name))
	if err != nil {
		return nil, true
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), name) {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, "sys", "class", "block", name, e.Name(), "partition")); err == nil {
			parts = append(parts, e.Name())
		}
	}
	sort.Strings(parts)
	return parts, true
}

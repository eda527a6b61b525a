package fog

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"strings"
)

// Scripts on the export that FOS sources with bash; imgcast has no bash.
var storeScripts = []string{
	"postinitscripts/fog.postinit",
	"postdownloadscripts/fog.postdownload",
}

// lvmSidecar names FOS's per-partition LVM description (dNpM.lvm).
var lvmSidecar = regexp.MustCompile(`^d[0-9]+p[0-9]+\.lvm$`)

// CheckImage looks at the mounted export (store is rooted at the mount
// point, e.g. os.DirFS("/images")) for what the task's image needs and
// imgcast does not do: a missing image folder, per-volume LVM images,
// FOS's legacy Windows layouts, and admin scripts FOS would run. Refusals
// come first. A store that cannot be read is a refusal too.
func CheckImage(store fs.FS, t *Task) []Problem {
	var refusals, warnings []Problem
	refuse := func(key, format string, args ...any) {
		refusals = append(refusals, Problem{Severity: Refusal, Key: key, Text: fmt.Sprintf(format, args...)})
	}
	dir := path.Clean(t.Img)
	info, err := fs.Stat(store, dir)
	switch {
	case err == nil && !info.IsDir() && (t.OSID == 1 || t.OSID == 2):
		refuse(dir, "single-file Windows XP/Vista images are not supported: recapture the image with a current FOG")
	case errors.Is(err, fs.ErrNotExist):
		refuse(dir, "the image folder %q does not exist on the storage node (check the image's path in FOG and the node's export)", dir)
	case err != nil:
		refuse(dir, "cannot read the image folder: %v", err)
	case !info.IsDir():
		refuse(dir, "the image path %q is a file, not a folder", dir)
	}
	if len(refusals) == 0 {
		entries, err := fs.ReadDir(store, dir)
		if err != nil {
			refuse(dir, "cannot list the image folder: %v", err)
		}
		var legacy, lvm []string
		for _, e := range entries {
			name := e.Name()
			switch {
			case strings.HasPrefix(name, "sys.img.") || strings.HasPrefix(name, "rec.img."):
				legacy = append(legacy, name)
			case lvmSidecar.MatchString(name):
				lvm = append(lvm, name)
			}
		}
		if len(legacy) > 0 {
			refuse(path.Join(dir, legacy[0]), "the image uses FOS's legacy Windows 7 layout (sys.img/rec.img), which is not supported: recapture it with a current FOG")
		}
		if len(lvm) > 0 {
			refuse(path.Join(dir, lvm[0]), "per-volume LVM images are not supported: deploy this image with FOG's own FOS")
		}
	}
	for _, name := range storeScripts {
		active, err := scriptHasCommands(store, name)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			warnings = append(warnings, Problem{Severity: Warning, Key: name, Text: fmt.Sprintf("cannot read the admin script (it would not be run anyway): %v", err)})
		case active:
			warnings = append(warnings, Problem{Severity: Warning, Key: name, Text: "this admin script is not run: imgcast has no bash (driver injection and other post-deploy changes must be done another way)"})
		}
	}
	return append(refusals, warnings...)
}

// scriptHasCommands reports whether a script holds anything but blank
// lines, and comments (FOG installs both scripts as comment-only stubs).
func scriptHasCommands(store fs.FS, name string) (bool, error) {
	f, err := store.Open(name)
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			return true, nil
		}
	}
	return false, sc.Err()
}

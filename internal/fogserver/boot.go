package fogserver

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path"
	"strings"
)

// Boot is what FOG's iPXE boot menu hands a host with a task.
type Boot struct {
	// Kernel and Init are the file names (FOG's "Host Kernel" and "Host
	// Init" fields), served from service/ipxe/ like FOG's bzImage and
	// init.xz (defaults bzImage and init.xz).
	Kernel, Init string
	// Files maps names under service/ipxe/ to files on disk.
	Files map[string]string
	// LogLevel is FOG_KERNEL_LOGLEVEL (default 4), RamdiskSize
	// FOG_KERNEL_RAMDISK_SIZE (default 275000).
	LogLevel, RamdiskSize int
	// KernelArgs is FOG_KERNEL_ARGS, the global "Kernel Arguments" free
	// text (a test's console=ttyS0 goes here).
	KernelArgs string
	// Web is FOG's web root as hosts reach it ("http://10.0.0.5/fog/");
	// default: from the request's Host.
	Web string
	// StorageIP is the storage node's address (default: Web's host).
	StorageIP string
	// MulticastRDV is FOG_MULTICAST_RENDEZVOUS (mcastrdv=), if set.
	MulticastRDV string
}

// KernelLine is the "kernel …" line of FOG 1.5.x's boot menu for a host's
// task (BootMenu::_kernel then the task's arguments, in getTasking's
// order), with web the web root; s supplies the session's port.
func (s *Server) KernelLine(h Host, web string) string {
	b := s.cfg.Boot
	kernel, initrd := or(b.Kernel, "bzImage"), or(b.Init, "init.xz")
	storageIP := b.StorageIP
	if storageIP == "" {
		storageIP = hostOf(web)
	}
	words := []string{"kernel", kernel, fmt.Sprintf("loglevel=%d", orInt(b.LogLevel, 4)),
		"initrd=" + initrd, "root=/dev/ram0", "rw", fmt.Sprintf("ramdisk_size=%d", orInt(b.RamdiskSize, 275000)),
		"web=" + web, "consoleblank=0", "rootfstype=ext4"}
	words = append(words, strings.Fields(b.KernelArgs)...)
	words = append(words, "nvme_core.default_ps_max_latency_us=0", "setmacto=${setmacto}")
	t := h.Task
	if t == nil {
		return strings.Join(words, " ")
	}
	img := t.Image
	words = append(words, "mac="+h.MAC, "ftp="+storageIP, "storage="+storageIP+":/images/", "storageip="+storageIP,
		fmt.Sprintf("osid=%d", img.OSID), "irqpoll")
	if b.MulticastRDV != "" {
		words = append(words, "mcastrdv="+b.MulticastRDV)
	}
	if t.Hostname != "" {
		words = append(words, "hostname="+t.Hostname)
	}
	words = append(words, "chkdsk=0", "img="+img.Name, "imgType="+or(img.Type, "n"),
		"imgPartitionType="+or(img.PartitionType, "all"), fmt.Sprintf("imgid=%d", img.ID),
		fmt.Sprintf("imgFormat=%d", img.Format), fmt.Sprintf("PIGZ_COMP=-%d", orInt(img.Compress, 6)))
	if t.Shutdown {
		words = append(words, "shutdown=1")
	}
	if t.FDrive != "" {
		words = append(words, "fdrive="+t.FDrive)
	}
	if t.HostEarly {
		words = append(words, "hostearly=1")
	}
	if t.Type == Multicast {
		sess := s.Session(t.Session)
		words = append(words, fmt.Sprintf("port=%d", sess.Port), fmt.Sprintf("mcastMaxWait=%d", sess.MaxWait))
	}
	if t.IsDebug {
		words = append(words, "isdebug=yes")
	}
	words = append(words, "type=down")
	if t.Type == Multicast {
		words = append(words, "mc=yes")
	}
	return strings.Join(words, " ")
}

// bootScript is service/ipxe/boot.php: for a host with an active task the
// kernel line, imgfetch of the init and boot; otherwise an exit to the
// next boot device.
func (s *Server) bootScript(r *http.Request) string {
	var mac string
	for _, k := range []string{"mac", "mac0", "mac1", "mac2"} {
		if mac = r.Form.Get(k); mac != "" {
			break
		}
	}
	s.mu.Lock()
	h, _ := s.findLocked(mac)
	var host Host
	hasTask := h != nil && h.Task != nil && active(h.status.State)
	if hasTask {
		host = h.Host
		t := *h.Task
		host.Task = &t
	}
	s.mu.Unlock()
	if !hasTask {
		return "#!ipxe\necho No task for this host in the fake FOG server\nexit\n"
	}
	web := s.cfg.Boot.Web
	if web == "" {
		web = "http://" + r.Host + s.cfg.Prefix
	}
	return fmt.Sprintf("#!ipxe\n%s\nimgfetch %s\nboot\n", s.KernelLine(host, web), or(s.cfg.Boot.Init, "init.xz"))
}

// serveBootFile serves service/ipxe/<name> from Boot.Files.
func (s *Server) serveBootFile(w http.ResponseWriter, r *http.Request, rel string) bool {
	name, ok := strings.CutPrefix(rel, "service/ipxe/")
	if !ok || name == "" || strings.Contains(name, "/") {
		return false
	}
	file, ok := s.cfg.Boot.Files[name]
	if !ok {
		return false
	}
	f, err := os.Open(file)
	if err != nil {
		return false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return false
	}
	http.ServeContent(w, r, path.Base(file), st.ModTime(), f)
	return true
}

func hostOf(web string) string {
	rest := web
	if i := strings.Index(rest, "://"); i >= 0 {
		rest = rest[i+3:]
	}
	host, _, _ := strings.Cut(rest, "/")
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return host
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func orInt(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/imgcast/imgcast/pkg/fog"
	"github.com/imgcast/imgcast/pkg/imaging"
	"github.com/imgcast/imgcast/pkg/inventory"
	"github.com/imgcast/imgcast/pkg/layout"
	"github.com/imgcast/imgcast/pkg/nfsmount"
	"github.com/imgcast/imgcast/pkg/receiver"
	"github.com/imgcast/imgcast/pkg/restore"
	"github.com/imgcast/imgcast/pkg/restore/fogplan"
	"github.com/imgcast/imgcast/pkg/restore/growfs"
	"github.com/imgcast/imgcast/pkg/restore/imagedir"
	"github.com/imgcast/imgcast/pkg/restore/ptable"
)

// FOG mode: the agent as a drop-in for FOG's client OS (FOS). FOG's boot
// menu puts the task on the kernel command line (web=, mac=, storage=,
// type=down, ...); the agent then speaks FOG's service scripts (check-in,
// inventory, progress, completion), mounts the storage node's NFS export
// at /images for the image's metadata (and, for a unicast deploy, its
// data), and receives a multicast deploy stream by stream in the order
// FOG's multicast manager sends it (package layout). Unlike FOS, every
// wait for a sender is bounded (imgcast.starttimeout and friends) and
// ends in a clear error on the console and to FOG (taskerror.php).

// fogTaskFrom returns the FOG task the kernel command line carries, or
// nil when it carries none or explicit imgcast.image/imgcast.mode words
// choose imgcast's own mode (they win).
func fogTaskFrom(cmdline string) *fog.Task {
	if !fog.Detect(cmdline) {
		return nil
	}
	for _, w := range strings.Fields(cmdline) {
		if strings.HasPrefix(w, "imgcast.image=") || strings.HasPrefix(w, "imgcast.mode=") {
			return nil
		}
	}
	return fog.Parse(cmdline)
}

// applyFOG fills the settings FOG's task implies: the server (web='s
// host, to choose the NIC that reaches it), the NIC (mac=), the
// after-action (shutdown=1 powers off) and the debug shell (isdebug=yes).
// imgcast.* words given on the line keep their values.
func applyFOG(s *Settings, t *fog.Task, cmdline string) {
	given := map[string]bool{}
	for _, w := range strings.Fields(cmdline) {
		if name, _, ok := strings.Cut(w, "="); ok && strings.HasPrefix(name, "imgcast.") {
			given[name] = true
		}
	}
	if u, err := url.Parse(t.Web); err == nil && !given["imgcast.server"] {
		if ip := net.ParseIP(u.Hostname()); ip != nil && ip.To4() != nil {
			s.Server = ip.To4()
		}
	}
	if mac, err := net.ParseMAC(t.MAC); err == nil && !given["imgcast.mac"] {
		s.MAC = mac
	}
	if !given["imgcast.rdv"] {
		if ip := net.ParseIP(t.Rendezvous()); ip != nil && ip.To4() != nil {
			s.Rendezvous = ip.To4()
		}
	}
	if !given["imgcast.after"] {
		s.After = AfterReboot
		if t.Shutdown {
			s.After = AfterPowerOff
		}
	}
	switch {
	case t.IsDebug:
		s.Mode = ModeDebug
	case t.Multicast():
		s.Mode = ModeMulticast
	default:
		s.Mode = ModeUnicast
	}
	if t.MCastMaxWait > 0 && !given["imgcast.starttimeout"] {
		// FOG's manager waits up to mcastMaxWait minutes for the session's
		// clients before the first stream starts.
		s.StartTimeout = max(s.StartTimeout, time.Duration(t.MCastMaxWait)*time.Minute+time.Minute)
	}
}

// fogEnv are the agent's seams for FOG mode, replaced by tests.
type fogEnv struct {
	// mount mounts storage= at images (nfsmount.Mount).
	mount func(ctx context.Context, storage, images string) error
	// images is where the export is mounted (/images).
	images string
	// disks lists the machine's disks once they have appeared.
	disks func(ctx context.Context) ([]fogplan.Disk, error)
	// grow grows partition n's filesystem on the closed disk (growfs on
	// its partition device).
	grow func(ctx context.Context, disk string, n int, fs string) (*growfs.Result, error)
	// progressInterval is how often progress.php is posted (3 s);
	// checkInInterval how often check-in asks again (5 s).
	progressInterval, checkInInterval time.Duration
}

// fogEnvironment is the real machine's.
func (a *agent) fogEnvironment() fogEnv {
	return fogEnv{
		mount: func(ctx context.Context, storage, images string) error {
			opt := nfsmount.Options{Target: images}
			if a.drivers != nil && a.drivers.Loader != nil {
				opt.LoadModule = a.drivers.Loader.Load
			}
			return nfsmount.Mount(ctx, storage, opt)
		},
		images: nfsmount.Target,
		disks:  a.fogDisks,
		grow: func(ctx context.Context, disk string, n int, fs string) (*growfs.Result, error) {
			dev, err := waitPartitionDevice(ctx, disk, n)
			if err != nil {
				return nil, err
			}
			return growfs.Grow(ctx, dev, fs, growfs.Options{Logf: a.logf})
		},
	}
}

// fogJob runs the FOG task; a failure is also reported to FOG.
func (a *agent) fogJob(ctx context.Context) error {
	if a.fogEnv.mount == nil {
		a.fogEnv = a.fogEnvironment()
	}
	t := a.fogTask
	machine, invErr := inventory.Read(a.root)
	if invErr != nil {
		a.logf("inventory incomplete: %v", invErr)
	}
	client, err := fog.NewClient(t, machine.DMI.UUID)
	if err != nil {
		return hintError{err, "FOG's boot menu sends web=http://SERVER/fog/; check FOG_WEB_HOST in FOG's settings"}
	}
	if a.fogHTTP != nil {
		client.HTTP = a.fogHTTP
	}
	client.CheckInInterval = a.fogEnv.checkInInterval
	err = a.fogDeploy(ctx, t, client, machine)
	if err != nil {
		// Best effort and bounded: the failure path must not wait on a
		// dead server. A FOG server older than taskerror.php answers 404.
		if rerr := client.TaskError(context.WithoutCancel(ctx), fog.ReportError, err.Error(), "imgcast"); rerr != nil {
			a.logf("the failure could not be reported to FOG (taskerror.php): %v", rerr)
		}
	}
	return err
}

// fogDeploy is FOS's deploy: check the task, check in, mount the store,
// send the inventory, plan, write, complete.
func (a *agent) fogDeploy(ctx context.Context, t *fog.Task, client *fog.Client, machine inventory.Machine) error {
	if err := t.Validate(); err != nil {
		return hintError{fmt.Errorf("the FOG task on the kernel command line: %w", err),
			"FOG's boot menu writes these keys; check the host's and the global Kernel Arguments in FOG for words that override them"}
	}
	if err := refuse(t.Problems()); err != nil {
		return err
	}
	version, err := client.Version(ctx)
	if err != nil {
		return hintError{fmt.Errorf("FOG server %s: %w", t.Web, err), "check that web= is FOG's web root and that this machine reaches it"}
	}
	caps, err := client.Caps(ctx)
	if err != nil {
		a.logf("FOG did not list its capabilities (%v): assuming none", err)
	}
	gen := layout.FOG15
	if caps.StreamHeaders() {
		gen = layout.FOG16
	}
	a.logf("FOG server %s at %s (%s multicast streams); image %s, type %s, partitions %s, format %d",
		fog.Printable(version), t.Web, gen, t.Img, t.ImgType, partitionsLabel(t), t.ImgFormat)

	if t.Capone {
		a.logf("capone=1: joining the session without a task (no check-in, no completion)")
	} else {
		a.logf("checking in with FOG (%s)", client.CheckInScript())
		err := client.CheckIn(ctx, func(st fog.CheckInStatus) {
			a.logf(" * %s (in line for %s)", st.Message, st.Waited.Round(time.Second))
		})
		if err != nil {
			return err
		}
		a.logf("FOG says go")
	}

	env := a.fogEnv
	if err := env.mount(ctx, t.Storage, env.images); err != nil {
		if errors.Is(err, nfsmount.ErrNoMarker) {
			if berr := client.Blame(ctx); berr != nil {
				a.logf("%v", berr)
			} else {
				a.logf("FOG was told its storage node failed this host (blame.php); it queues the task again")
			}
			return hintError{err, "Could not verify mount point, check if .mntcheck exists: FOG's image store on the storage node must hold the file .mntcheck; nothing was written"}
		}
		return hintError{err, "nothing was written; check the storage node FOG's storage group names"}
	}
	a.logf("mounted %s at %s", t.Storage, env.images)

	disks, err := env.disks(ctx)
	if err != nil {
		return err
	}
	if reply, err := client.Inventory(ctx, fog.InventoryFrom(machine, "")); err != nil {
		a.logf("warning: %v", err)
	} else if debugf := a.debugf(); debugf != nil {
		debugf("inventory.php: %s", reply)
	}
	if err := refuse(fog.CheckImage(os.DirFS(env.images), t)); err != nil {
		return err
	}
	d, err := a.fogPlan(ctx, t, disks, gen)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := a.fogWrite(ctx, t, client, d); err != nil {
		return err
	}
	a.logf("image %s written in %s (%s)", t.Img, time.Since(start).Round(time.Millisecond), a.settings.Mode)
	if t.Capone {
		return nil
	}
	done, err := client.Complete(ctx)
	if err != nil {
		return hintError{err, "the image was written; FOG's task page still shows the task: complete or cancel it there"}
	}
	if done.Warning != "" {
		a.logf("warning: %s", done.Warning)
	}
	a.logf("FOG has the task completed (Post_Stage3.php)")
	return nil
}

// refuse turns a list of problems into an error when one is a refusal,
// and prints the warnings.
func refuse(ps []fog.Problem) error {
	var errs []error
	for _, p := range ps {
		if p.Severity == fog.Refusal {
			errs = append(errs, p)
		}
	}
	if len(errs) > 0 {
		return hintError{fmt.Errorf("imgcast cannot do this FOG task (nothing was written): %w", errors.Join(errs...)),
			"boot FOG's own FOS for this task (set the host's Kernel and Init fields back), or change the image's settings in FOG"}
	}
	return nil
}

// fogDeployment is a checked deploy: the plan, the image folder, and for
// a multicast the session's streams, each bound to its write or to be
// discarded.
type fogDeployment struct {
	plan    *fogplan.Plan
	folder  imagedir.Folder
	streams []fogStream
	// gen is the server's generation: FOG 1.6 heads every stream with a
	// FOGMC1 header naming it.
	gen layout.Generation
}

// fogStream is one stream of the session.
type fogStream struct {
	layout.Stream
	disk  *fogplan.DiskPlan // nil: received and discarded
	write *fogplan.Write
	skip  string // why it is discarded
}

// fogPlan reads the image folder and plans the deploy, writing nothing.
func (a *agent) fogPlan(ctx context.Context, t *fog.Task, disks []fogplan.Disk, gen layout.Generation) (*fogDeployment, error) {
	dir := filepath.Join(a.fogEnv.images, filepath.Clean("/"+t.Img))
	folder, err := imagedir.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("image folder %s: %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, hintError{fmt.Errorf("image folder: %w", err), "img= names the image's folder in FOG's image store: check the image's path in FOG"}
	}
	var listing []fogplan.File
	var files []layout.File
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		listing = append(listing, fogplan.File{Name: e.Name(), Size: info.Size()})
		files = append(files, layout.File{Name: e.Name(), Size: info.Size()})
	}
	ft := fogplan.Task{
		Image: t.Img, Type: string(t.ImgType), PartitionType: t.ImgPartitionType,
		Format: t.Vars["imgFormat"], Legacy: t.Vars["imgLegacy"], FDrive: strings.Join(t.FDrive, ","),
		OSID: t.OSID, LargeSize: t.LargeSize, HostEarly: t.HostEarly, Hostname: t.Hostname,
	}
	ft.PostDownload, _ = os.ReadFile(filepath.Join(a.fogEnv.images, "postdownloadscripts", "fog.postdownload"))
	img, err := fogplan.Load(ctx, folder, listing, ft)
	if err != nil {
		return nil, hintError{err, "nothing was written; the image folder on the storage node is not one imgcast can deploy"}
	}
	plan, err := fogplan.NewPlan(img, ft, disks, filepath.EvalSymlinks)
	if err != nil {
		return nil, hintError{err, "nothing was written; check the host's Primary Disk (fdrive) and the image's type in FOG"}
	}
	for _, w := range plan.Warnings {
		a.logf("warning: %s", w)
	}
	for _, dp := range plan.Disks {
		a.logf("disk %s (%s): %d images to write, %d streams to drop", dp.Disk.Path, inventory.HumanBytes(dp.Disk.SizeBytes), len(dp.Writes), len(dp.Skip))
	}
	d := &fogDeployment{plan: plan, folder: folder, gen: gen}
	if a.settings.Mode != ModeMulticast {
		return d, nil
	}
	streams, err := layout.FOG(files, layout.FOGOptions{Type: layout.ImageType(plan.Type), Generation: gen, PortBase: t.Port, Partition: t.Partition()})
	if err != nil {
		return nil, err
	}
	if d.streams, err = bindStreams(plan, streams); err != nil {
		return nil, hintError{err, "nothing was written; FOG 1.5 does not send split images (formats 2, 4, 6): deploy them unicast or from FOG 1.6"}
	}
	return d, nil
}

// bindStreams binds each stream of the session to the write it feeds, or
// marks it to be received and discarded, and checks that every write has
// its stream.
func bindStreams(plan *fogplan.Plan, streams []layout.Stream) ([]fogStream, error) {
	type key struct{ disk, part int }
	writes := map[key]*fogplan.Write{}
	disks := map[key]*fogplan.DiskPlan{}
	fed := map[*fogplan.Write]bool{}
	for i, dp := range plan.Disks {
		n := i + 1
		if dp.Image != nil {
			n = dp.Image.Number
		}
		for _, w := range dp.Writes {
			writes[key{n, w.Partition}] = w
			disks[key{n, w.Partition}] = dp
		}
	}
	var out []fogStream
	for _, s := range streams {
		fs := fogStream{Stream: s}
		k := key{s.Disk, s.Partition}
		if w := writes[k]; w != nil && s.Disk != 0 && !fed[w] {
			fs.write, fs.disk = w, disks[k]
			fed[w] = true
		} else {
			fs.skip = "no partition of this task takes it"
		}
		out = append(out, fs)
	}
	for k, w := range writes {
		if !fed[w] {
			return nil, fmt.Errorf("the server's multicast session does not send %s (disk %d partition %d)", w.Image.Name, k.disk, k.part)
		}
	}
	return out, nil
}

// openDisk is one disk open for writing.
type openDisk struct {
	plan    *fogplan.DiskPlan
	f       *os.File
	table   bool  // its table was written
	written []int // partitions written
	// regions are the byte ranges data was written to, for a disk without
	// a table plan (a dd image, a single partition).
	regions []*fogplan.Write
}

// wipeRegions makes a disk written without a table plan unrecognisable
// after a failure: the first MiB of every range written, and for a whole
// disk also its last MiB (where a GPT keeps its backup copy).
func wipeRegions(f *os.File, regions []*fogplan.Write, cause error) error {
	var zeroed int64
	zero := func(off, n int64) error {
		if n <= 0 {
			return nil
		}
		if _, err := f.WriteAt(make([]byte, n), off); err != nil {
			return fmt.Errorf("zeroing %d bytes at byte %d of %s: %w", n, off, f.Name(), err)
		}
		zeroed += n
		return nil
	}
	for _, w := range regions {
		n := min(int64(restore.WipeSize), w.Size)
		err := zero(w.Offset, n)
		if err == nil && w.Partition == 0 && w.Size > 2*n {
			err = zero(w.Offset+w.Size-n, n)
		}
		if err != nil {
			return fmt.Errorf("%w; wiping the disk after the failure failed too: %v", cause, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("%w; syncing the wiped disk failed too: %v", cause, err)
	}
	return fmt.Errorf("%w; the disk was wiped so it cannot pass for imaged (zeroed %d bytes at the start of what was written)", cause, zeroed)
}

// fogWrite writes the plan: tables, data (received or read from the
// store), fix-ups; then, on the closed disks, grows the filesystems. A
// failure after the first write wipes what was written.
func (a *agent) fogWrite(ctx context.Context, t *fog.Task, client *fog.Client, d *fogDeployment) (err error) {
	var open []*openDisk
	byPlan := map[*fogplan.DiskPlan]*openDisk{}
	closeAll := func() {
		for _, od := range open {
			od.f.Close()
		}
		open = nil
	}
	defer func() {
		if err != nil {
			for _, od := range open {
				switch {
				case od.plan.Table != nil && (od.table || len(od.written) > 0):
					err = od.plan.Table.Failed(od.f, od.table, od.written, err)
				case od.plan.Table == nil && len(od.regions) > 0:
					err = wipeRegions(od.f, od.regions, err)
				}
			}
		}
		closeAll()
	}()
	for _, dp := range d.plan.Disks {
		f, _, err := restore.OpenDisk(dp.Disk.Path, dp.Geometry.LogicalSectorSize)
		if err != nil {
			return err
		}
		od := &openDisk{plan: dp, f: f}
		open = append(open, od)
		byPlan[dp] = od
	}
	for _, od := range open {
		if od.plan.Table == nil {
			continue
		}
		a.logf("writing the %s partition table to %s", od.plan.Table.Image.Dump.Label, od.plan.Disk.Path)
		od.table = true
		if err := od.plan.Table.WriteTable(od.f); err != nil {
			return fmt.Errorf("writing the partition table to %s: %w", od.plan.Disk.Path, err)
		}
	}

	rep := client.StartProgress(ctx, a.fogEnv.progressInterval)
	defer rep.Stop()
	fsTypes := map[*fogplan.Write]string{}
	restoreOne := func(od *openDisk, w *fogplan.Write, src io.Reader, how string) error {
		res, err := restore.RestorePartition(ctx, src, restore.NewTarget(od.f, w.Offset, w.Size), restore.Options{
			Partition: w.Partition, IgnoreChecksums: true, Verify: w.Verify, InputSize: w.Image.Size(),
			Check: w.Check, Compression: d.plan.Compression, Logf: a.logf,
			Progress: func(pg restore.Progress) {
				rep.Set(fog.Status{Elapsed: pg.Elapsed, Written: uint64(max(pg.Written, 0)), Total: uint64(max(pg.Total, 0)), Done: pg.Phase == "done"})
			},
		})
		od.written = append(od.written, w.Partition)
		od.regions = append(od.regions, w)
		if err != nil {
			return err
		}
		if res.Header != nil {
			fsTypes[w] = res.Header.FSType
		}
		a.logf("partition %d (%s, %s): %d bytes received, %d written in %s", w.Partition, w.Image.Name, how,
			res.In, res.Written, res.Elapsed.Round(time.Millisecond))
		return nil
	}

	if d.streams == nil {
		for _, od := range open {
			for _, w := range od.plan.Writes {
				a.logf("partition %d: reading %s from the store", w.Partition, w.Image.Name)
				r := w.Image.Open(ctx, d.folder)
				err := restoreOne(od, w, r, "unicast")
				r.Close()
				if err != nil {
					return err
				}
			}
		}
	} else {
		for i, s := range d.streams {
			rc := a.fogReceiver(t, i)
			st := imaging.Stream{Receiver: rc, Receive: a.receive, Name: s.ID, ID: s.ID, RequireHeader: d.gen == layout.FOG16}
			if s.write == nil {
				a.logf("stream %d (%s): receiving and discarding it (%s)", i+1, s.ID, s.skip)
				err := imaging.ReceiveStream(ctx, st, func(src io.Reader) error {
					_, err := io.Copy(io.Discard, src)
					return err
				})
				if err != nil {
					return fogHint(fmt.Errorf("stream %d (%s, discarded): %w", i+1, s.ID, err), t)
				}
				continue
			}
			a.logf("stream %d (%s): waiting on UDPcast port %d for partition %d of %s", i+1, s.ID, rc.Port, s.write.Partition, s.disk.Disk.Path)
			od := byPlan[s.disk]
			err := imaging.ReceiveStream(ctx, st, func(src io.Reader) error {
				return restoreOne(od, s.write, src, "multicast")
			})
			if err != nil {
				return fogHint(fmt.Errorf("stream %d (%s): %w", i+1, s.ID, err), t)
			}
		}
	}

	for _, od := range open {
		done, err := od.plan.Fixup(od.f)
		for _, line := range done {
			a.logf("%s: %s", od.plan.Disk.Path, line)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", od.plan.Disk.Path, err)
		}
		if err := od.f.Sync(); err != nil {
			return fmt.Errorf("syncing %s: %w", od.plan.Disk.Path, err)
		}
		if od.plan.Table != nil {
			if err := ptable.Reread(od.f); err != nil {
				a.logf("%s: the kernel did not re-read the partition table: %v", od.plan.Disk.Path, err)
			}
		}
	}
	// growfs opens the partitions itself: the disks' exclusive handles go
	// first.
	var grow []*openDisk
	grow, open = open, nil
	for _, od := range grow {
		od.f.Close()
	}
	for _, od := range grow {
		for _, w := range od.plan.Writes {
			if !w.Grow {
				continue
			}
			res, err := a.fogEnv.grow(ctx, od.plan.Disk.Path, w.Partition, fsTypes[w])
			if err != nil {
				return fmt.Errorf("growing the filesystem of partition %d of %s: %w", w.Partition, od.plan.Disk.Path, err)
			}
			switch {
			case res.Skipped != "":
				a.logf("partition %d: not grown: %s", w.Partition, res.Skipped)
			case res.Grown:
				a.logf("partition %d: %s grown from %d to %d bytes", w.Partition, res.Kind, res.Before, res.After)
			}
		}
	}
	return nil
}

// fogHint says what to check on a FOG server when a multicast stream
// fails; other errors get the imaging job's hints.
func fogHint(err error, t *fog.Task) error {
	switch {
	case errors.Is(err, imaging.ErrNoSender):
		return hintError{err, fmt.Sprintf("FOG's multicast manager (the FOGMulticastManager service on the storage group's master node) must run udp-sender for this session on port %d: see /opt/fog/log/multicast.log and the session under Tasks; a session that already started cannot be joined (imgcast.starttimeout bounds the wait)", t.Port)}
	case errors.Is(err, receiver.ErrReceiveTimeout):
		return hintError{err, "udp-sender stopped in the middle of the stream: see /opt/fog/log/multicast.log.udpcast.* on the storage node (was the task cancelled, or this machine dropped?)"}
	}
	return withHint(err)
}

// fogReceiver is the reception of the session's i-th stream: every
// stream on port=, the handshake to mcastrdv or the storage node, TTL 32,
// and imgcast's timeouts.
func (a *agent) fogReceiver(t *fog.Task, i int) receiver.Config {
	s := a.settings
	start := s.NextStartTimeout
	if i == 0 {
		start = s.StartTimeout
	}
	rc := receiver.Config{
		Port:           t.Port,
		TTL:            s.TTL,
		StartTimeout:   start,
		ReceiveTimeout: s.ReceiveTimeout,
		Logf: func(format string, args ...any) {
			if strings.HasPrefix(format, "received message") {
				if debugf := a.debugf(); debugf != nil {
					debugf(format, args...) // the sender's capabilities: a detail
				}
				return
			}
			a.logf(format, args...)
		},
	}
	if rc.TTL == 0 {
		rc.TTL = imaging.DefaultTTL
	}
	if a.network != nil {
		rc.Interface = a.network.NIC.Name
	}
	if addr, ok := netip.AddrFromSlice(s.Rendezvous.To4()); ok {
		rc.RendezvousAddr = addr
	}
	return rc
}

// fogDisks waits for the disks to appear (as the imaging job does) and
// lists them with what fdrive matching and single-partition restores need.
func (a *agent) fogDisks(ctx context.Context) ([]fogplan.Disk, error) {
	w := a.diskWait()
	if _, err := w.WaitDisk(ctx, 0); err != nil {
		return nil, err
	}
	found, err := inventory.ReadDisks(a.root)
	if err != nil {
		return nil, err
	}
	var out []fogplan.Disk
	for _, d := range found {
		fd := fogplan.Disk{Disk: d, WWN: fogplan.ReadWWN(a.root, d.Name)}
		if f, err := os.Open(d.Path); err == nil {
			ss := int64(d.SectorSize)
			if ss == 0 {
				ss = 512
			}
			fd.Table, _ = fogplan.ReadTable(f, ss)
			f.Close()
		}
		out = append(out, fd)
	}
	return out, nil
}

// waitPartitionDevice waits briefly for the device node of partition n
// of disk (the kernel creates it when it re-reads the table).
func waitPartitionDevice(ctx context.Context, disk string, n int) (string, error) {
	dev := fmt.Sprintf("%s%d", disk, n)
	if last := disk[len(disk)-1]; last >= '0' && last <= '9' {
		dev = fmt.Sprintf("%sp%d", disk, n) // nvme0n1p1, mmcblk0p1
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(dev); err == nil {
			return dev, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s did not appear after the partition table was re-read", dev)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// partitionsLabel is imgPartitionType for the console ("all" when FOG
// sends none).
func partitionsLabel(t *fog.Task) string {
	if t.ImgPartitionType == "" {
		return "all"
	}
	return t.ImgPartitionType
}

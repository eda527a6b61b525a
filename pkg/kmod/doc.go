// Package kmod loads the Linux kernel modules a machine's devices need,
// without modprobe or udev: it reads a module tree's index (modules.dep,
// modules.alias, modules.softdep, modules.builtin), loads a module with its
// dependencies (plain, gzip, xz or zstd compressed) at most once, and
// matches the modaliases of the devices in sysfs (coldplug) and of those
// the kernel announces later (hotplug uevents) to the modules to load.
//
// The agent uses it at boot (the network and the disk wait on its device
// events); initramfs/mkmodules uses the index at build time to stage a
// module tree.
//
//   - index.go: the module tree's index files
//   - loader.go: loading a module with its dependencies; module options
//     from the kernel command line
//   - drivers.go, uevent.go: coldplug and hotplug, loading what matches as
//     devices appear
package kmod

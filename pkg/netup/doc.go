// Package netup brings a freshly booted machine onto the network: it loads
// the kernel modules for the devices present, brings links up, waits for
// carrier and runs DHCP.
//
// The package is split by concern:
//
//   - modindex.go: modules.dep, modules.alias, modules.softdep and
//     modules.builtin of a module tree (also used at build time to stage one)
//   - loader.go: loading a module with its dependencies, compressed or not
//   - drivers.go, uevent.go: coldplug (modaliases in sysfs) and hotplug
//     (kernel uevents), loading what matches as devices appear
//   - links.go: finding NICs, setting them up, waiting for carrier
//   - dhcp.go, configure.go, renew.go: DHCP with nclient4, applying a
//     lease with netlink, renewing it during long jobs
//   - up.go: the whole bring-up, picking the NIC that reaches the server
//   - diagnose.go: what to tell the operator when nothing works
//   - entropy.go: the DHCP library needs a seeded CRNG; make sure it has one
package netup

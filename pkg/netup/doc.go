// Package netup brings a freshly booted machine onto the network: it waits
// for the NICs that driver loading (package kmod) creates, brings links up,
// waits for carrier and runs DHCP.
//
// The package is split by concern:
//
//   - links.go: finding NICs, setting them up, waiting for carrier
//   - dhcp.go, configure.go, renew.go: DHCP with nclient4, applying a
//     lease with netlink, renewing it during long jobs
//   - up.go: the whole bring-up, picking the NIC that reaches the server
//   - diagnose.go: what to tell the operator when nothing works
//   - entropy.go: the DHCP library needs a seeded CRNG; make sure it has one
package netup

// Package netup brings a freshly booted machine onto the network: it loads
// the kernel modules for the devices present, brings links up, waits for
// carrier and runs DHCP.
package netup

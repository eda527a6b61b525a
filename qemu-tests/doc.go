// Package qemutests boots the imgcast client in QEMU and checks it from its
// serial console: debug mode over PXE, the debug shell driven like a
// technician would over serial-over-LAN, and the diagnosis for a NIC
// without a driver. The harness is in qemu-tests/vm. These tests need root
// (network namespaces, taps) and run in `make test`; IMGCAST_QUICK=1 skips
// them.
package qemutests

// Package receiver implements the receiving side of the UDPcast protocol,
// compatible with udpcast's udp-sender (version 20120424).
package receiver

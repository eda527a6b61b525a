// Package receiver implements the receiving side of the UDPcast protocol,
// compatible with udpcast's udp-sender (version 20120424, as FOG and
// Clonezilla servers run it). The protocol is udpcast's own, defined by its
// source (https://www.udpcast.linux.lu/); the comments say what each
// message and field means where it is used.
//
// Receive joins a session and writes the stream to an io.Writer:
//
//	p, err := receiver.Receive(ctx, receiver.Config{
//		Port:           9000 + 2*partition,
//		StartTimeout:   30 * time.Second,
//		ReceiveTimeout: 10 * time.Second,
//		Progress:       func(p receiver.Progress) { bar.Set(p.Written) },
//	}, restoreInput)
//	switch {
//	case errors.Is(err, receiver.ErrStartTimeout):
//		// no multicast session: nothing was written, fall back
//	case err != nil:
//		// the stream is incomplete: never treat the output as good
//	}
//
// How it works: one UDP socket on 0.0.0.0:P joins the rendezvous and data
// groups (golang.org/x/net/ipv4) and sends everything from port P with the
// interface address as source. The receiving goroutine reads datagrams in
// batches (recvmmsg), copies each payload once into its slice buffer, and
// answers the sender; complete slices go to a writer goroutine, which
// rebuilds blocks lost but covered by FEC (github.com/klauspost/reedsolomon
// in udpcast's Cauchy layout) and writes them. When the writer falls behind
// by Config.MemoryLimit, acknowledgements are held back so that the sender
// waits, instead of the socket overflowing. Slice memory stays within
// Config.MemoryLimit whatever the sender announces.
//
// Anyone on the network can send datagrams with the sender's address, so
// no decision that ends a reception (dropped, refused, the end of the
// stream) rests on a single packet, and with a unicast RendezvousAddr the
// handshake is accepted only from it.
package receiver

package server

import (
	"errors"
	"net"
	"net/http"
	"net/netip"

	"github.com/imgcast/imgcast/pkg/mcastcheck"
	"github.com/imgcast/imgcast/pkg/status"
)

// offerMulticastCheck is POST /api/mcast-check?group=&port=&duration=&rate=
// (all optional): it sends the asker a multicast test stream, and a
// unicast copy to compare with, from the address the asker reached (see
// pkg/mcastcheck). Anyone on the network may ask, so mcastcheck bounds
// what each request and all of them together cost; the ports of an
// imaging session in progress are refused.
func (s *Server) offerMulticastCheck() http.HandlerFunc {
	o := &mcastcheck.Offerer{TTL: s.cfg.Sender.TTL, Logf: s.cfg.Log.Printf, Reserved: s.sessionPort}
	return func(w http.ResponseWriter, r *http.Request) {
		req, err := mcastcheck.ParseOfferRequest(r.URL.Query())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		asker, err := netip.ParseAddrPort(r.RemoteAddr)
		local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		if err != nil || !ok {
			http.Error(w, "cannot tell the asker's or the server's address", http.StatusInternalServerError)
			return
		}
		localAddr, err := netip.ParseAddrPort(local.String())
		if err != nil {
			http.Error(w, "cannot tell the server's address: "+err.Error(), http.StatusInternalServerError)
			return
		}
		offer, err := o.Offer(req, asker.Addr(), localAddr.Addr())
		switch {
		case errors.Is(err, mcastcheck.ErrBadRequest):
			http.Error(w, err.Error(), http.StatusBadRequest)
		case errors.Is(err, mcastcheck.ErrBusy):
			w.Header().Set("Retry-After", "2")
			http.Error(w, err.Error(), http.StatusTooManyRequests)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			writeJSON(w, offer)
		}
	}
}

// sessionPort reports whether port is one of a multicast session's (a
// partition's P or P+1) while that session may still send; with rolling
// sessions every session that waits or sends counts.
func (s *Server) sessionPort(port int) bool {
	for _, sess := range s.sessions.all() {
		if sess.Phase != status.Waiting && sess.Phase != status.Sending {
			continue
		}
		for _, st := range sess.Streams {
			if port == st.Port || port == st.Port+1 {
				return true
			}
		}
	}
	return false
}

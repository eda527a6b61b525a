package netup

import (
	"context"
	"time"
)

// minRenewRetry is the shortest wait between renewal attempts after a
// failure (RFC 2131 says 60 s; shorter leases in labs need less).
const minRenewRetry = 10 * time.Second

// nextRenewal says how long to wait, at now, before the next renewal
// attempt of lease l (RFC 2131 4.4.5): until T1; after a failure, half the
// time left until T2 (renewing) or until expiry (rebinding), but not less
// than minRenewRetry; after expiry, every minute. ok is false for an
// infinite lease.
func nextRenewal(l *Lease, now time.Time, failed bool) (wait time.Duration, ok bool) {
	if l.Duration <= 0 {
		return 0, false
	}
	elapsed := now.Sub(l.Obtained)
	if !failed && elapsed < l.T1 {
		return l.T1 - elapsed, true
	}
	var left time.Duration
	switch {
	case elapsed < l.T1:
		left = l.T1 - elapsed
	case elapsed < l.T2:
		left = (l.T2 - elapsed) / 2
	case elapsed < l.Duration:
		left = (l.Duration - elapsed) / 2
	default:
		return time.Minute, true
	}
	return max(left, minRenewRetry), true
}

// KeepLease renews the lease in the background of a long job until ctx
// ends: at T1, then again after failures as RFC 2131 says. If the lease
// expires anyway the address stays (the job may still finish) and the
// failure is logged. logf may be nil.
func (n *Network) KeepLease(ctx context.Context, logf func(string, ...any)) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	failed := false
	for {
		l := n.Lease()
		wait, ok := nextRenewal(l, time.Now(), failed)
		if !ok {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		fresh, err := l.Renew(ctx)
		if err == nil {
			err = fresh.apply(l.metric)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failed = true
			if time.Since(l.Obtained) >= l.Duration {
				logf("DHCP lease on %s expired and could not be renewed (%v); keeping %s", l.Interface, err, l.Address.IP)
			} else {
				logf("DHCP renewal: %v (will retry)", err)
			}
			continue
		}
		failed = false
		n.setLease(fresh)
		logf("DHCP lease on %s renewed: %s", fresh.Interface, fresh)
	}
}

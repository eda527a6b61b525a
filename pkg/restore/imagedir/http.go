package imagedir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// HTTPOptions tune an HTTP folder; zero values take the defaults.
type HTTPOptions struct {
	Client      *http.Client
	Retries     int           // consecutive failed attempts before giving up (default 5)
	Backoff     time.Duration // first wait between attempts, doubled each time (default 1 s)
	IdleTimeout time.Duration // no byte for this long cuts the connection (default 60 s)
}

// HTTPFolder is an image folder served over HTTP(S).
type HTTPFolder struct {
	base *url.URL
	opt  HTTPOptions
}

// NewHTTP returns the folder at the URL base.
func NewHTTP(base string, opt HTTPOptions) (*HTTPFolder, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	if opt.Client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		tr.ResponseHeaderTimeout = 30 * time.Second
		opt.Client = &http.Client{Transport: tr}
	}
	if opt.Retries <= 0 {
		opt.Retries = 5
	}
	if opt.Backoff <= 0 {
		opt.Backoff = time.Second
	}
	if opt.IdleTimeout <= 0 {
		opt.IdleTimeout = 60 * time.Second
	}
	return &HTTPFolder{base: u, opt: opt}, nil
}

func (h *HTTPFolder) String() string { return h.base.String() }

func (h *HTTPFolder) url(name string) string {
	return h.base.ResolveReference(&url.URL{Path: url.PathEscape(name)}).String()
}

// Size sends a HEAD request.
func (h *HTTPFolder) Size(ctx context.Context, name string) (int64, error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	u := h.url(name)
	var lastErr error
	for attempt := 0; attempt < h.opt.Retries; attempt++ {
		if attempt > 0 {
			if err := sleep(ctx, h.opt.Backoff<<(attempt-1)); err != nil {
				return 0, err
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
		if err != nil {
			return 0, err
		}
		resp, err := h.opt.Client.Do(req)
		if err != nil {
			lastErr = err
			continue
		}
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
			return 0, fmt.Errorf("HEAD %s: %w", u, fs.ErrNotExist)
		case resp.StatusCode >= 500:
			lastErr = fmt.Errorf("HEAD %s: %s", u, resp.Status)
			continue
		case resp.StatusCode != http.StatusOK:
			return 0, fmt.Errorf("HEAD %s: %s", u, resp.Status)
		}
		return resp.ContentLength, nil
	}
	return 0, fmt.Errorf("HEAD %s: gave up after %d attempts: %w", u, h.opt.Retries, lastErr)
}

// Open GETs the file; the returned reader resumes broken transfers.
func (h *HTTPFolder) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	r := &resumer{h: h, ctx: ctx, url: h.url(name), size: -1}
	if err := r.connect(); err != nil {
		return nil, err
	}
	return r, nil
}

// resumer is a GET that reconnects where it broke off.
type resumer struct {
	h        *HTTPFolder
	ctx      context.Context
	url      string
	size     int64 // from the first response, -1 unknown
	pos      int64
	body     io.ReadCloser
	cancel   context.CancelFunc
	idle     *time.Timer
	failures int
	lastErr  error
	mu       sync.Mutex
	stalled  bool
}

func (r *resumer) connect() error {
	for {
		err := r.try()
		if err == nil {
			return nil
		}
		var perm permanent
		if errors.As(err, &perm) {
			return perm.err
		}
		r.failures++
		r.lastErr = err
		if r.failures >= r.h.opt.Retries {
			return fmt.Errorf("GET %s: gave up after %d attempts at byte %d: %w", r.url, r.failures, r.pos, err)
		}
		if err := sleep(r.ctx, r.h.opt.Backoff<<(r.failures-1)); err != nil {
			return err
		}
	}
}

type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }

func (r *resumer) try() error {
	ctx, cancel := context.WithCancel(r.ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		cancel()
		return permanent{err}
	}
	if r.pos > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(r.pos, 10)+"-")
	}
	resp, err := r.h.opt.Client.Do(req)
	if err != nil {
		cancel()
		if r.ctx.Err() != nil {
			return permanent{r.ctx.Err()}
		}
		return err
	}
	fail := func(e error) error {
		resp.Body.Close()
		cancel()
		return e
	}
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return fail(permanent{fmt.Errorf("GET %s: %w", r.url, fs.ErrNotExist)})
	case resp.StatusCode >= 500:
		return fail(fmt.Errorf("GET %s: %s", r.url, resp.Status))
	case r.pos > 0 && resp.StatusCode == http.StatusPartialContent:
		if !strings.HasPrefix(resp.Header.Get("Content-Range"), "bytes "+strconv.FormatInt(r.pos, 10)+"-") {
			return fail(permanent{fmt.Errorf("GET %s: resumed at the wrong place (Content-Range %q, wanted byte %d)", r.url, resp.Header.Get("Content-Range"), r.pos)})
		}
	case resp.StatusCode == http.StatusOK:
		if r.pos == 0 {
			r.size = resp.ContentLength
		} else if resp.ContentLength >= 0 && r.size >= 0 && resp.ContentLength != r.size {
			return fail(permanent{fmt.Errorf("GET %s: the file changed size (%d, was %d) during the download", r.url, resp.ContentLength, r.size)})
		}
	default:
		return fail(permanent{fmt.Errorf("GET %s: %s", r.url, resp.Status)})
	}
	r.body, r.cancel = resp.Body, cancel
	r.mu.Lock()
	r.stalled = false
	r.mu.Unlock()
	r.idle = time.AfterFunc(r.h.opt.IdleTimeout, func() {
		r.mu.Lock()
		r.stalled = true
		r.mu.Unlock()
		cancel()
	})
	if resp.StatusCode == http.StatusOK && r.pos > 0 {
		// No range support: skip what was already delivered.
		if _, err := io.CopyN(io.Discard, r.body, r.pos); err != nil {
			r.drop()
			return fmt.Errorf("skipping %d bytes already read: %w", r.pos, err)
		}
	}
	return nil
}

func (r *resumer) drop() {
	if r.idle != nil {
		r.idle.Stop()
	}
	if r.body != nil {
		r.body.Close()
		r.cancel()
	}
	r.body = nil
}

func (r *resumer) Read(p []byte) (int, error) {
	for {
		if r.body == nil {
			if err := r.connect(); err != nil {
				return 0, err
			}
		}
		n, err := r.body.Read(p)
		r.pos += int64(n)
		if n > 0 {
			r.idle.Reset(r.h.opt.IdleTimeout)
			r.failures = 0
		}
		if err == nil {
			return n, nil
		}
		if err == io.EOF && (r.size < 0 || r.pos == r.size) {
			r.drop()
			return n, io.EOF
		}
		if r.ctx.Err() != nil {
			r.drop()
			return n, r.ctx.Err()
		}
		r.mu.Lock()
		if r.stalled {
			err = fmt.Errorf("no data for %v", r.h.opt.IdleTimeout)
		}
		r.mu.Unlock()
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		r.drop()
		r.failures++
		r.lastErr = err
		if r.failures >= r.h.opt.Retries {
			return n, fmt.Errorf("GET %s: connection lost at byte %d, gave up after %d attempts: %w", r.url, r.pos, r.failures, err)
		}
		if err := sleep(r.ctx, r.h.opt.Backoff<<(r.failures-1)); err != nil {
			return n, err
		}
		if n > 0 {
			return n, nil
		}
	}
}

func (r *resumer) Close() error {
	r.drop()
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

package fog

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode"
)

// The answers FOG's service scripts give when all is well.
const (
	// AnswerGo is check-in's go-ahead (mc_checkin.php, Pre_Stage1.php).
	AnswerGo = "##@GO"
	// AnswerDone is Post_Stage3.php's and blame.php's acknowledgement.
	AnswerDone = "##"
	// noActiveTask opens FOG's answer for a host without an active task.
	noActiveTask = "No Active Task found"
)

// Defaults of a Client's intervals and limits; FOS's values unless said.
const (
	DefaultRequestTimeout   = 30 * time.Second
	DefaultCheckInInterval  = 5 * time.Second
	DefaultInventoryRetry   = 2 * time.Second
	DefaultInventoryRetries = 10
	DefaultBlameInterval    = 5 * time.Second
	DefaultBlameTries       = 10
	DefaultCompleteTries    = 11
	// DefaultCompleteBackoff is the first pause between completion tries,
	// growing by itself per try up to 5 s (FOS retries with no pause).
	DefaultCompleteBackoff  = time.Second
	DefaultTaskErrorTimeout = 5 * time.Second
	maxCompleteBackoff      = 5 * time.Second
	// maxAnswer bounds what is read of an answer: FOG's are a few bytes,
	// anything longer is an error page or not FOG.
	maxAnswer = 64 << 10
	// maxShown bounds an answer shown on the console.
	maxShown = 300
)

// Client makes FOS's HTTP calls for one task. Its fields may be changed
// before the first call; zero values mean the defaults above.
type Client struct {
	// HTTP does the requests. NewClient gives it a transport that, like
	// FOS's curl -k, accepts the server's certificate unverified: FOG's
	// HTTPS certificate comes from FOG's own CA, which the client cannot
	// know.
	HTTP *http.Client

	RequestTimeout   time.Duration
	CheckInInterval  time.Duration
	InventoryRetry   time.Duration
	InventoryRetries int
	BlameInterval    time.Duration
	BlameTries       int
	CompleteTries    int
	CompleteBackoff  time.Duration
	TaskErrorTimeout time.Duration

	service   *url.URL
	mac       string
	sysUUID   string
	taskType  string
	multicast bool
}

// NewClient returns a client for a task. sysUUID is the machine's SMBIOS
// UUID (FOS sends it lower-cased; FOG does not use it to find the host).
func NewClient(t *Task, sysUUID string) (*Client, error) {
	u, err := url.Parse(t.Web)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("web=%q is not the FOG web root (http://SERVER/fog/)", t.Web)
	}
	if t.MAC == "" {
		return nil, errors.New("mac= is missing: FOG finds the host by its MAC")
	}
	taskType := t.Type
	if taskType == "" {
		taskType = "down"
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	return &Client{
		HTTP:      &http.Client{Transport: transport},
		service:   u.JoinPath("service/"),
		mac:       t.MAC,
		sysUUID:   strings.ToLower(sysUUID),
		taskType:  taskType,
		multicast: t.Multicast(),
	}, nil
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// answer is one reply of a service script.
type answer struct {
	body string // with trailing newlines removed, as FOS's $(curl ...) has it
	code int
}

// call sends one request to service/<script> (a POST of form when form is
// not nil, else a GET) and returns the answer. An HTTP error status is not
// an error here: FOS reads the body whatever the status.
func (c *Client) call(ctx context.Context, timeout time.Duration, script string, form url.Values) (answer, error) {
	ctx, cancel := context.WithTimeout(ctx, or(timeout, or(c.RequestTimeout, DefaultRequestTimeout)))
	defer cancel()
	u := c.service.JoinPath(script)
	if q, ok := strings.CutPrefix(script, "getversion.php?"); ok {
		u = c.service.JoinPath("getversion.php")
		u.RawQuery = q
	}
	method, body := http.MethodGet, io.Reader(nil)
	if form != nil {
		method, body = http.MethodPost, strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return answer{}, err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: %w", method, u.Redacted(), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: reading the answer: %w", method, u.Redacted(), err)
	}
	if len(b) > maxAnswer {
		return answer{}, fmt.Errorf("%s %s: the answer is longer than %d KiB: this is not a FOG service script", method, u.Redacted(), maxAnswer>>10)
	}
	return answer{body: strings.TrimRight(string(b), "\n"), code: resp.StatusCode}, nil
}

// identity is the form every task call carries.
func (c *Client) identity() url.Values {
	return url.Values{"sysuuid": {c.sysUUID}, "mac": {c.mac}, "type": {c.taskType}}
}

// describe turns an answer into one line for the console.
func (a answer) describe() string {
	s := Printable(a.body)
	if s == "" {
		s = "(empty answer)"
	}
	if a.code != http.StatusOK {
		s = fmt.Sprintf("HTTP %d: %s", a.code, s)
	}
	return s
}

// Printable makes a server's text safe for one console line: control
// characters become spaces, runs of spaces one, and it is cut to a few
// hundred characters.
func Printable(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxShown {
		cut := maxShown
		for cut > 0 && !utf8Start(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

// sleep waits d or until ctx ends.
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

// Version returns the server's FOG version (getversion.php).
func (c *Client) Version(ctx context.Context) (string, error) {
	a, err := c.call(ctx, 0, "getversion.php", nil)
	if err != nil {
		return "", err
	}
	if a.code != http.StatusOK {
		return "", fmt.Errorf("getversion.php: %s", a.describe())
	}
	return Printable(a.body), nil
}

// Caps are the capability tokens a FOG server advertises.
type Caps struct {
	// Tokens are the advertised capabilities, e.g. mclvm, mcstreamid.
	Tokens []string
	// Version is set instead when the server answered with its version:
	// a server older than the probe, which has no capabilities.
	Version string
}

// Has reports whether the server advertises a capability.
func (c Caps) Has(token string) bool {
	for _, t := range c.Tokens {
		if t == token {
			return true
		}
	}
	return false
}

// StreamHeaders reports whether every multicast stream starts with the
// 128-byte FOGMC1 record naming its file (capability mcstreamid).
func (c Caps) StreamHeaders() bool { return c.Has("mcstreamid") }

var capToken = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// ParseCaps reads an answer of getversion.php?caps=1: space-separated
// lower-case tokens, or a version string from a server without the probe.
func ParseCaps(body string) Caps {
	fields := strings.Fields(body)
	if len(fields) == 0 {
		return Caps{}
	}
	for _, f := range fields {
		if !capToken.MatchString(f) {
			return Caps{Version: Printable(body)}
		}
	}
	return Caps{Tokens: fields}
}

// Caps asks the server for its capabilities (getversion.php?caps=1). A
// server that cannot be asked is an error, never "no capabilities": the
// answer decides how streams are read.
func (c *Client) Caps(ctx context.Context) (Caps, error) {
	a, err := c.call(ctx, 0, "getversion.php?caps=1", nil)
	if err != nil {
		return Caps{}, err
	}
	if a.code != http.StatusOK {
		return Caps{}, fmt.Errorf("getversion.php?caps=1: %s", a.describe())
	}
	return ParseCaps(a.body), nil
}

// CheckInStatus is one unsuccessful check-in: the server's answer (a queue
// message such as "No open slots, There are 2 before me.") or why there was
// none.
type CheckInStatus struct {
	// Message is the server's answer made printable, or what went wrong.
	Message string
	// Waited is the time since the first try.
	Waited time.Duration
	// Attempt counts tries from 1.
	Attempt int
	// Err is set when the server could not be asked.
	Err error
}

// CheckInScript is the service script check-in uses: mc_checkin.php for a
// multicast task, else Pre_Stage1.php.
func (c *Client) CheckInScript() string {
	if c.multicast {
		return "mc_checkin.php"
	}
	return "Pre_Stage1.php"
}

// CheckIn tells FOG the host is ready and waits for its go-ahead: it asks
// every CheckInInterval until the answer is exactly "##@GO", calling wait
// (when not nil) with each other answer. A queued task may wait long, so
// there is no time limit but ctx's; a cancelled ctx returns its error.
func (c *Client) CheckIn(ctx context.Context, wait func(CheckInStatus)) error {
	script := c.CheckInScript()
	start := time.Now()
	for attempt := 1; ; attempt++ {
		a, err := c.call(ctx, 0, script, c.identity())
		if err == nil && a.body == AnswerGo {
			return nil
		}
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("check-in (%s): %w", script, cerr)
		}
		st := CheckInStatus{Waited: time.Since(start), Attempt: attempt, Err: err}
		if err != nil {
			st.Message = "no answer from the FOG server: " + err.Error()
		} else {
			st.Message = a.describe()
		}
		if wait != nil {
			wait(st)
		}
		if err := sleep(ctx, or(c.CheckInInterval, DefaultCheckInInterval)); err != nil {
			return fmt.Errorf("check-in (%s), last answer %q: %w", script, st.Message, err)
		}
	}
}

// Inventory sends the machine's inventory (inventory.php), trying again
// every InventoryRetry while the answer is empty, at most InventoryRetries
// times, as FOS does. The error says why it was not recorded; FOS goes on
// imaging regardless, and so should the caller.
func (c *Client) Inventory(ctx context.Context, inv Inventory) (string, error) {
	retries := or(c.InventoryRetries, DefaultInventoryRetries)
	var last error
	for try := 0; ; try++ {
		a, err := c.call(ctx, 0, "inventory.php", inv.Form())
		switch {
		case err != nil:
			last = err
		case a.code != http.StatusOK:
			last = fmt.Errorf("inventory.php: %s", a.describe())
		case a.body != "":
			return Printable(a.body), nil
		default:
			last = errors.New("inventory.php gave an empty answer")
		}
		if try == retries {
			return "", fmt.Errorf("inventory not recorded after %d tries: %w", retries+1, last)
		}
		if err := sleep(ctx, or(c.InventoryRetry, DefaultInventoryRetry)); err != nil {
			return "", fmt.Errorf("inventory: %w (last: %v)", err, last)
		}
	}
}

// Progress posts one status line (see Status.Line) to progress.php. FOG
// answers nothing on success; its error answers are ignored, as FOS does.
func (c *Client) Progress(ctx context.Context, line string) error {
	form := url.Values{"sysuuid": {c.sysUUID}, "mac": {c.mac}, "status": {encode64(line)}}
	a, err := c.call(ctx, 0, "progress.php", form)
	if err != nil {
		return err
	}
	if a.code != http.StatusOK {
		return fmt.Errorf("progress.php: %s", a.describe())
	}
	return nil
}

// Completion is the outcome of a successful Complete.
type Completion struct {
	// Warning is set when the task was already complete on the server
	// (after a multicast, FOG completes every task of the session when the
	// sender ends).
	Warning string
	// Attempts counts the tries.
	Attempts int
}

// Complete tells FOG the deploy is done (Post_Stage3.php) and retries until
// it answers "##", at most CompleteTries times with a short growing pause.
// After a multicast, "No Active Task found" means the server already
// completed the session: success with a warning.
func (c *Client) Complete(ctx context.Context) (Completion, error) {
	tries := or(c.CompleteTries, DefaultCompleteTries)
	pause := or(c.CompleteBackoff, DefaultCompleteBackoff)
	var last string
	for try := 1; try <= tries; try++ {
		a, err := c.call(ctx, 0, "Post_Stage3.php", c.identity())
		switch {
		case err != nil:
			last = "no answer: " + err.Error()
		case a.body == AnswerDone:
			return Completion{Attempts: try}, nil
		case c.multicast && strings.HasPrefix(a.body, noActiveTask):
			return Completion{Attempts: try, Warning: fmt.Sprintf(
				"FOG had already completed this host's task (%q): the multicast session ended on the server before this host reported; the image was written", Printable(a.body))}, nil
		default:
			last = a.describe()
		}
		if try == tries {
			break
		}
		if err := sleep(ctx, pause); err != nil {
			return Completion{Attempts: try}, fmt.Errorf("completing the task: %w (last answer: %s)", err, last)
		}
		pause = min(pause+or(c.CompleteBackoff, DefaultCompleteBackoff), maxCompleteBackoff)
	}
	return Completion{Attempts: tries}, fmt.Errorf("FOG did not confirm the task's completion after %d tries (Post_Stage3.php); last answer: %s", tries, last)
}

// Report kinds for TaskError.
const (
	ReportError   = "error"
	ReportWarning = "warning"
)

// TaskError reports a failure or warning to FOG (taskerror.php), bounded by
// TaskErrorTimeout. A server that predates the endpoint answers 404: that
// is not an error.
func (c *Client) TaskError(ctx context.Context, kind, text, script string) error {
	form := url.Values{"mac": {c.mac}, "sysuuid": {c.sysUUID}, "type": {kind}, "text": {text}, "script": {script}}
	a, err := c.call(ctx, or(c.TaskErrorTimeout, DefaultTaskErrorTimeout), "taskerror.php", form)
	if err != nil {
		return err
	}
	if a.code != http.StatusOK && a.code != http.StatusNotFound {
		return fmt.Errorf("taskerror.php: %s", a.describe())
	}
	return nil
}

// Blame tells FOG that its storage node failed this host (blame.php: the
// node is marked failed for the host and the task queued again), trying
// BlameTries times BlameInterval apart until it answers "##".
func (c *Client) Blame(ctx context.Context) error {
	tries := or(c.BlameTries, DefaultBlameTries)
	var last string
	for try := 1; try <= tries; try++ {
		a, err := c.call(ctx, 0, "blame.php", c.identity())
		switch {
		case err != nil:
			last = "no answer: " + err.Error()
		case a.body == AnswerDone:
			return nil
		default:
			last = a.describe()
		}
		if try == tries {
			break
		}
		if err := sleep(ctx, or(c.BlameInterval, DefaultBlameInterval)); err != nil {
			return fmt.Errorf("reporting the storage failure: %w (last answer: %s)", err, last)
		}
	}
	return fmt.Errorf("FOG did not acknowledge the storage failure after %d tries (blame.php); last answer: %s", tries, last)
}

// Reachable checks that the FOG web root answers (HEAD index.php with a
// status below 400), as FOS's network start-up does.
func (c *Client) Reachable(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, or(c.RequestTimeout, DefaultRequestTimeout))
	defer cancel()
	u := c.service.JoinPath("..", "index.php")
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("FOG web root: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer))
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return fmt.Errorf("FOG web root: HEAD %s: HTTP %d", u.Redacted(), resp.StatusCode)
	}
	return nil
}

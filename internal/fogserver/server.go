// Package fogserver is a fake FOG server for tests: the service scripts
// FOS calls (check-in, inventory, progress, completion, error reports,
// blame, version and capabilities) with FOG's exact answer strings, the
// iPXE boot script FOG's boot menu gives a host with a task, and a fake
// multicast manager that runs the real udp-sender the way FOG's does
// (manager.go).
//
// The server keeps per-host task state like FOG's database would, answers
// scripted queue messages before "##@GO", sleeps a random 5 ms to
// MaxLatency in check-in and completion like FOG's randWait, can complete a
// multicast session's tasks before its clients report (the race late FOS
// clients lose), and records every call for assertions.
package fogserver

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"
)

// TaskType is FOG's task type id.
type TaskType int

// The task types a deploy client sees.
const (
	Deploy    TaskType = 1
	Multicast TaskType = 8
)

// Task states, as FOG numbers them.
const (
	StateQueued     = 1
	StateCheckedIn  = 2
	StateInProgress = 3
	StateComplete   = 4
	StateCancelled  = 5
)

// Answers FOG gives; see FOG's service scripts and TaskQueue.
const (
	AnswerGo         = "##@GO"
	AnswerDone       = "##"
	AnswerInvalidMAC = "Invalid MAC Address!"
	AnswerInvalid    = "Invalid Host"
	// QueueFull is 1.5.x's answer while a multicast session is queued.
	QueueFull = "No open slots, There are 0 before me."
)

// NoActiveTask is FOG's answer for a host without an active task.
func NoActiveTask(name, mac string) string {
	return fmt.Sprintf("No Active Task found for Host: %s (%s)", name, mac)
}

// Config configures a Server.
type Config struct {
	// Version is getversion.php's answer (default "1.5.10").
	Version string
	// Caps makes the server a 1.6 one: getversion.php?caps=1 answers
	// "mclvm mcstreamid" instead of the version.
	Caps bool
	// MaxLatency makes check-in and Post_Stage3 sleep a random 5 ms to
	// MaxLatency first, as FOG's randWait does (2 s). Zero: no sleep.
	MaxLatency time.Duration
	// TaskErrorMissing makes taskerror.php answer 404, as servers before
	// it existed do.
	TaskErrorMissing bool
	// CompleteSessionOnCheckout completes every task of a multicast
	// session when its first host reports (1.5.x's manager completes the
	// session when any task does): later hosts get "No Active Task found".
	CompleteSessionOnCheckout bool
	// AckIfAlreadyComplete answers "##" to Post_Stage3 for a host whose
	// task is already complete, as FOG 1.6 does.
	AckIfAlreadyComplete bool
	// Prefix is the web root's path (default "/fog/").
	Prefix string
	// Boot is what the iPXE boot script hands out.
	Boot Boot
}

// Image is the image a task deploys, as FOG's database describes it.
type Image struct {
	Name          string // the folder under /images (img=)
	ID            int
	Type          string // n, mps, mpa, dd (imgType=)
	PartitionType string // all, mbr or N (imgPartitionType=)
	Format        int    // imgFormat=
	OSID          int
	Compress      int // PIGZ_COMP level
}

// Task is a host's task, with the answers a test scripts.
type Task struct {
	Type  TaskType
	Image Image
	// Session names the multicast session the task belongs to (Multicast).
	Session string
	// Shutdown, IsDebug, FDrive, Hostname/HostEarly go onto the boot line.
	Shutdown  bool
	IsDebug   bool
	FDrive    string
	Hostname  string
	HostEarly bool

	// Queue are check-in answers given, one per check-in, before "##@GO".
	Queue []string
	// PostStage3 are answers given, one per call, before the task is
	// completed.
	PostStage3 []string
	// InventoryEmpty is how many inventory.php calls get an empty answer.
	InventoryEmpty int
	// Blame are blame.php answers given before "##".
	Blame []string
}

// Host is a registered host.
type Host struct {
	Name string
	MAC  string
	Task *Task
}

// Session is a multicast session.
type Session struct {
	Name string
	Port int
	// MaxWait is the session's wait as the boot line's mcastMaxWait shows
	// it (minutes in 1.5.x).
	MaxWait int
	// Clients counts check-ins minus completions, as FOG's session does.
	Clients int
}

// TaskStatus is a task's state and the progress FOG stored for it.
type TaskStatus struct {
	State         int
	BPM           string
	TimeElapsed   string
	TimeRemaining string
	DataCopied    string
	DataTotal     string
	Percent       string
	// ImageSize is what progress.php appends to the image's size field.
	ImageSize string
	// Inventory is the last inventory.php data, decoded.
	Inventory map[string]string
	// NodeFailures counts blame.php calls.
	NodeFailures int
	// Errors are taskerror.php reports ("type: text").
	Errors []string
}

// Call is one request the server answered.
type Call struct {
	Time   time.Time
	Method string
	// Script is the path under the web root, e.g. "service/mc_checkin.php".
	Script string
	// Form holds the query and form values as PHP's $_REQUEST has them.
	Form url.Values
	// Status is progress.php's status, decoded as PHP does and split on '@'.
	Status []string
	// Decoded is inventory.php's fields after FOG's stripAndDecode.
	Decoded map[string]string
	Answer  string
	Code    int
}

type hostState struct {
	Host
	status TaskStatus
}

// Server is the fake FOG server. Its methods are safe for concurrent use.
type Server struct {
	cfg Config

	mu       sync.Mutex
	hosts    []*hostState
	sessions map[string]*Session
	calls    []Call
}

// New returns a server with no hosts.
func New(cfg Config) *Server {
	if cfg.Version == "" {
		cfg.Version = "1.5.10"
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "/fog/"
	}
	return &Server{cfg: cfg, sessions: map[string]*Session{}}
}

// AddSession registers a multicast session.
func (s *Server) AddSession(sess Session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := sess
	s.sessions[sess.Name] = &c
}

// AddHost registers a host; its task, if any, starts queued.
func (s *Server) AddHost(h Host) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h.Task != nil {
		t := *h.Task
		h.Task = &t
	}
	s.hosts = append(s.hosts, &hostState{Host: h, status: TaskStatus{State: StateQueued}})
}

// Status returns the task status of the host with this MAC.
func (s *Server) Status(mac string) TaskStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.hosts {
		if sameMAC(h.MAC, mac) {
			st := h.status
			st.Errors = append([]string(nil), st.Errors...)
			return st
		}
	}
	return TaskStatus{}
}

// Session returns a session's state.
func (s *Server) Session(name string) Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess := s.sessions[name]; sess != nil {
		return *sess
	}
	return Session{}
}

// CompleteSession marks every active task of a session complete, as FOG's
// multicast manager does when the session's udp-sender chain ends.
func (s *Server) CompleteSession(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.completeSessionLocked(name)
}

func (s *Server) completeSessionLocked(name string) {
	for _, h := range s.hosts {
		if h.Task != nil && h.Task.Session == name && active(h.status.State) {
			h.status.State = StateComplete
		}
	}
}

// Calls returns every call so far, in order; with scripts given, only the
// calls to those (e.g. "service/progress.php").
func (s *Server) Calls(scripts ...string) []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Call
	for _, c := range s.calls {
		if len(scripts) == 0 || contains(scripts, c.Script) {
			out = append(out, c)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func active(state int) bool { return state >= StateQueued && state <= StateInProgress }

func sameMAC(a, b string) bool {
	norm := func(s string) string { return strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), "-", ":")) }
	return norm(a) == norm(b)
}

// findLocked looks a host up by a MAC or a '|'-separated list of MACs, as
// FOG's getHostItem does. The answer is FOG's error when there is none.
func (s *Server) findLocked(macs string) (*hostState, string) {
	if macs == "" {
		return nil, AnswerInvalidMAC
	}
	valid := false
	for _, m := range strings.Split(macs, "|") {
		if hw, err := net.ParseMAC(strings.TrimSpace(m)); err != nil || len(hw) != 6 {
			continue
		}
		valid = true
		for _, h := range s.hosts {
			if sameMAC(h.MAC, m) {
				return h, ""
			}
		}
	}
	if !valid {
		return nil, AnswerInvalidMAC
	}
	return nil, AnswerInvalid
}

// Handler serves the web root (Config.Prefix) and everything under it.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serve) }

// Client returns an HTTP client whose requests this server answers
// in-process, without a network: for unit tests (it works inside a
// testing/synctest bubble, where the latency sleeps take no real time).
func (s *Server) Client() *http.Client { return &http.Client{Transport: roundTripper{s}} }

type roundTripper struct{ s *Server }

func (rt roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	rt.s.serve(rec, r)
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}

// Serve answers on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	rel, ok := strings.CutPrefix(path.Clean("/"+r.URL.Path)+"/", s.cfg.Prefix)
	rel = strings.TrimSuffix(rel, "/")
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	call := Call{Time: time.Now(), Method: r.Method, Script: rel, Form: r.Form, Code: http.StatusOK}
	if !ok {
		call.Code = http.StatusNotFound
	} else {
		switch rel {
		case "index.php", "":
			call.Answer = "<html><head><title>FOG Project</title></head></html>"
		case "service/getversion.php":
			call.Answer = s.cfg.Version
			if _, caps := r.Form["caps"]; caps && s.cfg.Caps {
				call.Answer = "mclvm mcstreamid"
			}
		case "service/mc_checkin.php", "service/Pre_Stage1.php":
			s.randWait(r.Context())
			call.Answer = s.checkIn(r.Form.Get("mac"))
		case "service/Post_Stage3.php":
			s.randWait(r.Context())
			call.Answer = s.checkout(r.Form.Get("mac"))
		case "service/progress.php":
			call.Status, call.Answer = s.progress(r.Form.Get("mac"), r.Form.Get("status"))
		case "service/inventory.php":
			call.Decoded, call.Answer = s.inventory(r.Form)
		case "service/blame.php":
			call.Answer = s.blame(r.Form.Get("mac"))
		case "service/taskerror.php":
			if s.cfg.TaskErrorMissing {
				call.Code = http.StatusNotFound
			} else {
				call.Answer = s.taskError(r.Form)
			}
		case "service/ipxe/boot.php":
			call.Answer = s.bootScript(r)
		default:
			if !s.serveBootFile(w, r, rel) {
				call.Code = http.StatusNotFound
			} else {
				call.Answer = "(file)"
			}
		}
	}
	s.mu.Lock()
	s.calls = append(s.calls, call)
	s.mu.Unlock()
	switch {
	case call.Answer == "(file)":
	case call.Code == http.StatusNotFound:
		http.NotFound(w, r)
	default:
		w.Header().Set("Content-Type", "text/html; charset=UTF-8")
		fmt.Fprint(w, call.Answer)
	}
}

// randWait sleeps like FOG's randWait: usleep(rand(5000, 2000000)), here
// up to MaxLatency; it ends early when the request is abandoned.
func (s *Server) randWait(ctx context.Context) {
	if s.cfg.MaxLatency <= 0 {
		return
	}
	const least = 5 * time.Millisecond
	d := least
	if s.cfg.MaxLatency > least {
		d += rand.N(s.cfg.MaxLatency - least)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// checkIn is TaskQueue::checkIn: scripted queue answers, then "##@GO".
func (s *Server) checkIn(mac string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, msg := s.findLocked(mac)
	if h == nil {
		return msg
	}
	if h.Task == nil || !active(h.status.State) {
		return NoActiveTask(h.Name, h.MAC)
	}
	if h.status.State == StateQueued {
		h.status.State = StateCheckedIn
	}
	if len(h.Task.Queue) > 0 {
		answer := h.Task.Queue[0]
		h.Task.Queue = h.Task.Queue[1:]
		return answer
	}
	if h.Task.Type == Multicast && h.status.State != StateInProgress {
		if sess := s.sessions[h.Task.Session]; sess != nil {
			sess.Clients = max(sess.Clients, 0) + 1
		}
	}
	h.status.State = StateInProgress
	return AnswerGo
}

// checkout is Post_Stage3.php's TaskQueue::checkout.
func (s *Server) checkout(mac string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, msg := s.findLocked(mac)
	if h == nil {
		return msg
	}
	if h.Task == nil || !active(h.status.State) {
		if s.cfg.AckIfAlreadyComplete && h.Task != nil && h.status.State == StateComplete {
			return AnswerDone
		}
		return NoActiveTask(h.Name, h.MAC)
	}
	if len(h.Task.PostStage3) > 0 {
		answer := h.Task.PostStage3[0]
		h.Task.PostStage3 = h.Task.PostStage3[1:]
		return answer
	}
	h.status.State = StateComplete
	if h.Task.Type == Multicast {
		if sess := s.sessions[h.Task.Session]; sess != nil {
			sess.Clients--
		}
		if s.cfg.CompleteSessionOnCheckout {
			s.completeSessionLocked(h.Task.Session)
		}
	}
	return AnswerDone
}

// progress is progress.php: the status decoded as PHP does, stored when
// its first six fields are all set. The answer is empty on success.
func (s *Server) progress(mac, status string) ([]string, string) {
	fields := strings.Split(string(phpBase64Decode(status)), "@")
	s.mu.Lock()
	defer s.mu.Unlock()
	h, msg := s.findLocked(mac)
	if h == nil {
		return fields, msg
	}
	if h.Task == nil || !active(h.status.State) {
		return fields, NoActiveTask(h.Name, h.MAC)
	}
	if len(fields) < 6 {
		return fields, ""
	}
	for _, f := range fields[:6] {
		if f == "" {
			return fields, ""
		}
	}
	st := &h.status
	st.BPM, st.TimeElapsed, st.TimeRemaining = fields[0], fields[1], fields[2]
	st.DataCopied, st.DataTotal, st.Percent = fields[3], fields[4], fields[5]
	if len(fields) > 6 && !strings.Contains(st.ImageSize, fields[6]+":") {
		st.ImageSize += fields[6] + ":"
	}
	return fields, ""
}

// inventory is inventory.php: every field through stripAndDecode, the host
// found by the decoded MAC list, "Done".
func (s *Server) inventory(form url.Values) (map[string]string, string) {
	decoded := map[string]string{}
	for k := range form {
		decoded[k] = stripAndDecode(form.Get(k))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	h, msg := s.findLocked(decoded["mac"])
	if h == nil {
		return decoded, msg
	}
	if h.Task != nil && h.Task.InventoryEmpty > 0 {
		h.Task.InventoryEmpty--
		return decoded, ""
	}
	h.status.Inventory = decoded
	return decoded, "Done"
}

// blame is blame.php: the node failure recorded, the task queued again.
func (s *Server) blame(mac string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, msg := s.findLocked(mac)
	if h == nil {
		return msg
	}
	if h.Task == nil || !active(h.status.State) {
		return NoActiveTask(h.Name, h.MAC)
	}
	if len(h.Task.Blame) > 0 {
		answer := h.Task.Blame[0]
		h.Task.Blame = h.Task.Blame[1:]
		return answer
	}
	h.status.NodeFailures++
	h.status.State = StateQueued
	return AnswerDone
}

// taskError records a taskerror.php report; FOS ignores the answer.
func (s *Server) taskError(form url.Values) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, msg := s.findLocked(form.Get("mac"))
	if h == nil {
		return msg
	}
	h.status.Errors = append(h.status.Errors, form.Get("type")+": "+form.Get("text"))
	return ""
}

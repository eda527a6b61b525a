package vm

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// qmp is a client of QEMU's machine protocol (QMP) on a unix socket: one
// command at a time, events kept.
type qmp struct {
	mu     sync.Mutex
	conn   net.Conn
	r      *bufio.Reader
	events []string
}

// dialQMP connects to QEMU's QMP socket (waiting up to timeout for QEMU to
// create it) and leaves capabilities negotiation mode.
func dialQMP(path string, timeout time.Duration) (*qmp, error) {
	deadline := time.Now().Add(timeout)
	var conn net.Conn
	for {
		var err error
		conn, err = net.Dial("unix", path)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("qmp %s: %w", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	q := &qmp{conn: conn, r: bufio.NewReader(conn)}
	if _, err := q.r.ReadBytes('\n'); err != nil { // the greeting
		conn.Close()
		return nil, fmt.Errorf("qmp greeting: %w", err)
	}
	if _, err := q.do("qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

// do runs a command and returns its "return" value.
func (q *qmp) do(command string, args any) (json.RawMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	q.conn.SetDeadline(time.Now().Add(30 * time.Second))
	defer q.conn.SetDeadline(time.Time{})
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", command, err)
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return nil, fmt.Errorf("qmp %s: %w: %s", command, err, line)
		}
		switch {
		case resp.Event != "":
			q.events = append(q.events, resp.Event)
		case resp.Error != nil:
			return nil, fmt.Errorf("qmp %s: %s: %s", command, resp.Error.Class, resp.Error.Desc)
		default:
			return resp.Return, nil
		}
	}
}

func (q *qmp) close() { q.conn.Close() }

// VGA text mode: rows of 80 cells of (character, attribute) in the 32 KiB
// at 0xb8000. The screen shows 25 of them: Linux's console scrolls by
// moving the start of the visible window through that memory, so the
// window's rows are not always the first ones.
const (
	vgaTextBase = 0xb8000
	vgaTextSize = 32 << 10
	vgaCols     = 80
)

// ScreenText returns the rows of the VM's VGA text memory, the visible
// screen and what recently scrolled off it (up to 204 rows of 80
// characters, in memory order), trailing blanks removed. It needs
// Config.VGA and a guest in VGA text mode (a BIOS machine, the kernel's
// vgacon console).
func (v *VM) ScreenText() ([]string, error) {
	if v.qmp == nil {
		return nil, errors.New("no QMP connection")
	}
	f, err := os.CreateTemp("", "vga-*.bin")
	if err != nil {
		return nil, err
	}
	f.Close()
	defer os.Remove(f.Name())
	if _, err := v.qmp.do("pmemsave", map[string]any{"val": vgaTextBase, "size": vgaTextSize, "filename": f.Name()}); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		return nil, err
	}
	return vgaRowsOf(b), nil
}

// vgaRowsOf decodes VGA text memory (code page 437; only ASCII is kept,
// other characters become '?').
func vgaRowsOf(mem []byte) []string {
	var rows []string
	for r := 0; (r+1)*vgaCols*2 <= len(mem); r++ {
		line := make([]byte, vgaCols)
		for c := range vgaCols {
			ch := mem[(r*vgaCols+c)*2]
			switch {
			case ch == 0:
				ch = ' '
			case ch < 0x20 || ch > 0x7e:
				ch = '?'
			}
			line[c] = ch
		}
		rows = append(rows, string(trimRight(line)))
	}
	return rows
}

func trimRight(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == ' ' {
		b = b[:len(b)-1]
	}
	return b
}

// Screendump writes the VM's screen to a PNG file.
func (v *VM) Screendump(file string) error {
	if v.qmp == nil {
		return errors.New("no QMP connection")
	}
	_, err := v.qmp.do("screendump", map[string]any{"filename": file, "format": "png"})
	return err
}

// SetLink sets the carrier of the VM's i-th NIC, as pulling or plugging a
// cable would.
func (v *VM) SetLink(i int, up bool) error {
	if v.qmp == nil {
		return errors.New("no QMP connection")
	}
	_, err := v.qmp.do("set_link", map[string]any{"name": fmt.Sprintf("nic%d", i), "up": up})
	return err
}

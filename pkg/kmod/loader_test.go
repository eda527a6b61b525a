package kmod

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/shlex"
	"github.com/ulikunitz/xz"
)

// fakeLoader records load calls instead of calling the kernel.
type fakeLoader struct {
	mu    sync.Mutex
	calls []string
	fail  map[string]error
}

func (f *fakeLoader) load(path, params string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := Name(path)
	if params != "" {
		name += "(" + params + ")"
	}
	f.calls = append(f.calls, name)
	return f.fail[Name(path)]
}

func newTestLoader(t *testing.T, fail map[string]error) (*Loader, *fakeLoader) {
	f := &fakeLoader{fail: fail}
	l := NewLoader(testIndex(t))
	l.load = f.load
	return l, f
}

func TestLoaderLoadsDepsOnce(t *testing.T) {
	l, f := newTestLoader(t, nil)
	l.Params = map[string]string{"virtio_net": "napi_tx=1"}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := l.Load("virtio_net"); err != nil {
				t.Error(err)
			}
			if err := l.Load("virtio-pci"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	count := map[string]int{}
	for _, c := range f.calls {
		count[c]++
	}
	for name, n := range count {
		if n != 1 {
			t.Errorf("%s loaded %d times", name, n)
		}
	}
	if count["virtio_net(napi_tx=1)"] != 1 {
		t.Errorf("virtio_net not loaded with its parameters: %v", f.calls)
	}
	if len(count) != 8 {
		t.Errorf("loaded %v, want the 8 modules of virtio_net and virtio_pci", f.calls)
	}
	if got := len(l.Results()); got != 8 {
		t.Errorf("Results has %d entries, want 8", got)
	}
}

func TestLoaderDependencyOrderAndFailures(t *testing.T) {
	boom := errors.New("boom")
	for _, tt := range []struct {
		name      string
		load      string
		fail      map[string]error
		blacklist map[string]bool
		wantCalls []string
		wantErr   string
	}{
		{"order", "nvme", nil, nil,
			[]string{"crct10dif_common", "crct10dif_pclmul", "crc_t10dif", "nvme_core", "nvme"}, ""},
		{"failed dependency stops the load", "nvme", map[string]error{"nvme_core": boom}, nil,
			[]string{"crct10dif_common", "crct10dif_pclmul", "crc_t10dif", "nvme_core"}, "module nvme: dependency module nvme_core: boom"},
		{"failed soft dependency is ignored", "crc_t10dif", map[string]error{"crct10dif_pclmul": boom}, nil,
			[]string{"crct10dif_common", "crct10dif_pclmul", "crc_t10dif"}, ""},
		{"blacklisted module", "e1000e", nil, map[string]bool{"e1000e": true}, nil, "blacklisted"},
		{"blacklisted dependency", "virtio_net", nil, map[string]bool{"failover": true}, nil, "dependency module failover: blacklisted"},
		{"missing dependency", "needs_missing", nil, nil, nil, "module gone is not in"},
		{"builtin", "loop", nil, nil, nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l, f := newTestLoader(t, tt.fail)
			l.Blacklist = tt.blacklist
			err := l.Load(tt.load)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Load(%s) = %v, want error containing %q", tt.load, err, tt.wantErr)
			}
			if !reflect.DeepEqual(f.calls, tt.wantCalls) {
				t.Errorf("loaded %v, want %v", f.calls, tt.wantCalls)
			}
		})
	}
}

func TestDecompress(t *testing.T) {
	module := bytes.Repeat([]byte("\x7fELF module body "), 1000)
	compressors := map[string]func([]byte) []byte{
		"gzip": func(b []byte) []byte {
			var buf bytes.Buffer
			w := gzip.NewWriter(&buf)
			w.Write(b)
			w.Close()
			return buf.Bytes()
		},
		"xz": func(b []byte) []byte {
			var buf bytes.Buffer
			w, _ := xz.NewWriter(&buf)
			w.Write(b)
			w.Close()
			return buf.Bytes()
		},
		"zstd": func(b []byte) []byte {
			e, _ := zstd.NewWriter(nil)
			return e.EncodeAll(b, nil)
		},
	}
	for kind, compress := range compressors {
		t.Run(kind, func(t *testing.T) {
			packed := compress(module)
			if got := compressionOf(packed[:6]); got != kind {
				t.Fatalf("compressionOf = %q, want %q", got, kind)
			}
			got, err := decompress(bytes.NewReader(packed), kind)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, module) {
				t.Fatal("decompressed module differs")
			}
			if _, err := decompress(bytes.NewReader(packed[:len(packed)/2]), kind); err == nil {
				t.Error("truncated file: want an error")
			}
		})
	}
	if got := compressionOf(module[:6]); got != "" {
		t.Errorf("plain module detected as %q", got)
	}
}

func TestModuleOptionsFromCmdline(t *testing.T) {
	params, blacklist := OptionsFromCmdline(`console=ttyS0 e1000e.InterruptThrottleRate=3000 e1000e.debug=2 ` +
		`nvme_core.default_ps_max_latency_us=0 modprobe.blacklist=r8169,snd-hda uroot.uinitargs="-v -x" panic=-1 virtio-net.napi_tx`)
	wantParams := map[string]string{
		"e1000e":     "InterruptThrottleRate=3000 debug=2",
		"nvme_core":  "default_ps_max_latency_us=0",
		"uroot":      "uinitargs=-v -x",
		"virtio_net": "napi_tx",
	}
	if !reflect.DeepEqual(params, wantParams) {
		t.Errorf("params = %v, want %v", params, wantParams)
	}
	if !reflect.DeepEqual(blacklist, map[string]bool{"r8169": true, "snd_hda": true}) {
		t.Errorf("blacklist = %v", blacklist)
	}
}

// TestCmdlineWords pins how u-root's shlex splits a kernel command line
// for the cases the kernel defines: words on blanks, double quotes group
// and are removed.
func TestCmdlineWords(t *testing.T) {
	for in, want := range map[string][]string{
		"":                              nil,
		"  a  b\n":                      {"a", "b"},
		`x="a b" y`:                     {"x=a b", "y"},
		`uroot.uinitargs="-v" initrd=x`: {"uroot.uinitargs=-v", "initrd=x"},
		`"quoted word"`:                 {"quoted word"},
		`a=""`:                          {"a="},
	} {
		if got := shlex.Argv(in); !reflect.DeepEqual(got, want) {
			t.Errorf("shlex.Argv(%q) = %q, want %q", in, got, want)
		}
	}
}

func ExampleIndex_LoadOrder() {
	ix, _ := ParseIndex("/lib/modules/6.1.0-56-amd64",
		strings.NewReader("kernel/net/core/failover.ko:\nkernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n"+
			"kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n"),
		nil, nil, nil)
	order, _ := ix.LoadOrder("virtio-net")
	fmt.Println(order)
	// Output: [failover net_failover virtio_net]
}

package bytesize

import "testing"

func TestFormat(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want string
	}{{-1, "0 B"}, {0, "0 B"}, {1023, "1023 B"}, {1024, "1 KiB"}, {96 << 20, "96 MiB"}, {3 << 29, "1.5 GiB"}, {500107862016, "465.8 GiB"}, {77 << 20, "77 MiB"}} {
		if got := Format(tt.n); got != tt.want {
			t.Errorf("Format(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
	if got := Format(uint64(1) << 63); got != "8 EiB" {
		t.Errorf("Format(2^63) = %q", got)
	}
}

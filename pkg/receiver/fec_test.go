package receiver

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// A worked example of udpcast's FEC: S=1, n=3, R=2, 4-byte blocks.
func specVector(t *testing.T) (data, parity [][]byte) {
	data = [][]byte{unhex(t, "01020304"), unhex(t, "10203040"), unhex(t, "ff00aa55")}
	parity = [][]byte{unhex(t, "3964af3a"), unhex(t, "3def6574")}
	return data, parity
}

func TestFECEncodeSpecVector(t *testing.T) {
	data, want := specVector(t)
	got := make([][]byte, 2)
	if err := newFECCodec(4).encode(data, got); err != nil {
		t.Fatal(err)
	}
	for r := range want {
		if !bytes.Equal(got[r], want[r]) {
			t.Errorf("F%d = % x, want % x", r, got[r], want[r])
		}
	}
}

// Coefficients inv((128+r) XOR 0) for r = 0..7 in GF(2^8).
func TestFECCoefficients(t *testing.T) {
	want := unhex(t, "1b54a11d7ccce4b0")
	got := make([][]byte, 8)
	if err := newFECCodec(1).encode([][]byte{{1}}, got); err != nil {
		t.Fatal(err)
	}
	for r := range want {
		if got[r][0] != want[r] {
			t.Errorf("row %d coefficient %#x, want %#x", r, got[r][0], want[r])
		}
	}
}

func TestFECReconstructSpecVector(t *testing.T) {
	tests := []struct {
		name   string
		erased []int
		rows   []int
	}{
		{"D0 from F0", []int{0}, []int{0}},
		{"D1 from F1", []int{1}, []int{1}},
		{"D0,D2 from F0,F1", []int{0, 2}, []int{0, 1}},
		{"D2,D1 from F1,F0", []int{2, 1}, []int{1, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			orig, parity := specVector(t)
			data := make([][]byte, len(orig))
			for j := range orig {
				data[j] = bytes.Clone(orig[j])
			}
			var par [][]byte
			for _, j := range tc.erased {
				copy(data[j], "junk")
			}
			for _, r := range tc.rows {
				par = append(par, parity[r])
			}
			if err := newFECCodec(4).reconstruct(data, tc.erased, tc.rows, par); err != nil {
				t.Fatal(err)
			}
			for j := range orig {
				if !bytes.Equal(data[j], orig[j]) {
					t.Errorf("D%d = % x, want % x", j, data[j], orig[j])
				}
			}
		})
	}
}

func TestFECReconstructRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	c := newFECCodec(64)
	for range 50 {
		n := 1 + rng.IntN(128)
		redundancy := 1 + rng.IntN(16)
		data := make([][]byte, n)
		for j := range data {
			data[j] = make([]byte, 64)
			for k := range data[j] {
				data[j][k] = byte(rng.Uint32())
			}
		}
		parity := make([][]byte, redundancy)
		if err := c.encode(data, parity); err != nil {
			t.Fatal(err)
		}
		k := 1 + rng.IntN(min(n, redundancy))
		erased := rng.Perm(n)[:k]
		rows := rng.Perm(redundancy)[:k]
		work := make([][]byte, n)
		for j := range data {
			work[j] = bytes.Clone(data[j])
		}
		var par [][]byte
		for i, j := range erased {
			clear(work[j])
			par = append(par, parity[rows[i]])
		}
		if err := c.reconstruct(work, erased, rows, par); err != nil {
			t.Fatalf("n=%d R=%d erased=%v rows=%v: %v", n, redundancy, erased, rows, err)
		}
		for j := range data {
			if !bytes.Equal(work[j], data[j]) {
				t.Fatalf("n=%d R=%d erased=%v rows=%v: block %d wrong", n, redundancy, erased, rows, j)
			}
		}
	}
}

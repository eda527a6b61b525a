package natsort

import (
	"reflect"
	"sort"
	"testing"
)

func TestLess(t *testing.T) {
	in := []string{"sdaa", "nvme10n1", "sdb", "nvme2n1", "sda", "D1P3.img", "d1p10.img", "d1p2.img", "d1p02.img", "nvme0n1"}
	sort.Slice(in, func(i, j int) bool { return Less(in[i], in[j]) })
	want := []string{"d1p02.img", "d1p2.img", "D1P3.img", "d1p10.img", "nvme0n1", "nvme2n1", "nvme10n1", "sda", "sdaa", "sdb"}
	if !reflect.DeepEqual(in, want) {
		t.Errorf("got %q\nwant %q", in, want)
	}
}

package dnsmasq

import (
	"reflect"
	"testing"
)

// Each kind of client matches exactly one dhcp-boot line.
func TestBootArgs(t *testing.T) {
	for _, tt := range []struct {
		name string
		opt  Options
		want []string
	}{
		{"no PXE", Options{}, nil},
		{"iPXE only", Options{IPXEScript: "http://10.0.0.1/boot.ipxe"},
			[]string{"--dhcp-match=set:ipxe,175", "--dhcp-boot=tag:ipxe,http://10.0.0.1/boot.ipxe"}},
		{"a lab: BIOS and UEFI firmware PXE, then iPXE", Options{IPXEScript: "imgcast.ipxe", UEFIBootFile: "ipxe.efi", BIOSBootFile: "undionly.kpxe"},
			[]string{
				"--dhcp-match=set:ipxe,175",
				"--dhcp-match=set:efi64,option:client-arch,7", "--dhcp-match=set:efi64,option:client-arch,9",
				"--dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi",
				"--dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe",
				"--dhcp-boot=tag:ipxe,imgcast.ipxe",
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := bootArgs(tt.opt); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

package igmp

import (
	"bufio"
	"bytes"
	"os"
	"strings"
)

// procNetIGMP is where Linux shows, per interface, the IGMP version it
// uses: V3 unless forced otherwise (net.ipv4.conf.IF.force_igmp_version)
// or an older querier was heard recently.
const procNetIGMP = "/proc/net/igmp"

// KernelVersion is the IGMP version the kernel speaks on the interface
// now; our own messages must use the same one, or a querier (and a
// snooping switch) that runs IGMPv2 would not understand them. When the
// kernel does not say, it is IGMPv3, the kernel's default.
func KernelVersion(ifname string) Version {
	b, err := os.ReadFile(procNetIGMP)
	if err != nil {
		return V3
	}
	return versionIn(b, ifname)
}

// versionIn is the version /proc/net/igmp's text b gives ifname, V3 when
// it says nothing.
func versionIn(b []byte, ifname string) Version {
	if v, ok := ParseProcNetIGMP(b)[ifname]; ok {
		return v
	}
	return V3
}

// ParseProcNetIGMP reads /proc/net/igmp: a header line, then for every
// interface a line "Idx<TAB>Name : Count Querier" (Querier is V1, V2 or
// V3) followed by its groups on lines that start with a tab.
func ParseProcNetIGMP(b []byte) map[string]Version {
	out := map[string]Version{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	first := true
	for sc.Scan() {
		line := sc.Text()
		if first {
			first = false
			continue
		}
		if line == "" || line[0] == '\t' || line[0] == ' ' {
			continue
		}
		head, tail, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		name := strings.Fields(head)
		rest := strings.Fields(tail)
		if len(name) != 2 || len(rest) < 2 {
			continue
		}
		switch rest[1] {
		case "V1":
			out[name[1]] = V1
		case "V2":
			out[name[1]] = V2
		case "V3":
			out[name[1]] = V3
		}
	}
	return out
}

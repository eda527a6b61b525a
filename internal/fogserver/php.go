package fogserver

import (
	"encoding/base64"
	"strings"
	"unicode/utf8"
)

// phpBase64Decode decodes like PHP's non-strict base64_decode: bytes
// outside the alphabet (spaces, newlines, '=') are skipped and a trailing
// lone character is dropped. FOS posts base64 without url-encoding it, so
// PHP has already turned each '+' into a space, which this then skips: the
// server sees what FOS's bug makes it see.
func phpBase64Decode(s string) []byte {
	var clean strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' {
			clean.WriteByte(c)
		}
	}
	t := clean.String()
	if len(t)%4 == 1 {
		t = t[:len(t)-1]
	}
	b, err := base64.RawStdEncoding.DecodeString(t)
	if err != nil {
		// Unreachable for a cleaned string of valid length; PHP would
		// return false, which reads as "".
		return nil
	}
	return b
}

// stripAndDecode is FOGCore::stripAndDecode, which inventory.php applies to
// every field: spaces back to '+', base64-decoded and trimmed, kept only
// when the result is valid UTF-8 (else the raw value stays), trimmed.
func stripAndDecode(v string) string {
	dec := strings.TrimSpace(string(phpBase64Decode(strings.ReplaceAll(v, " ", "+"))))
	if utf8.ValidString(dec) {
		v = dec
	}
	return strings.TrimSpace(v)
}

// natLess orders names as PHP's natcasesort does for image file names:
// case-insensitively, with runs of digits compared as numbers, so d1p2.img
// comes before d1p10.img.
func natLess(a, b string) bool { return natCompare(strings.ToLower(a), strings.ToLower(b)) < 0 }

func natCompare(a, b string) int {
	for a != "" && b != "" {
		if isDigit(a[0]) && isDigit(b[0]) {
			da, db := digitRun(a), digitRun(b)
			if c := compareNumbers(a[:da], b[:db]); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			if a[0] < b[0] {
				return -1
			}
			return 1
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func digitRun(s string) int {
	n := 0
	for n < len(s) && isDigit(s[n]) {
		n++
	}
	return n
}

// compareNumbers compares two digit strings by value; equal values with
// more leading zeros sort later (FOG's file names have none).
func compareNumbers(a, b string) int {
	ta, tb := strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
	switch {
	case len(ta) != len(tb):
		return len(ta) - len(tb)
	case ta != tb:
		return strings.Compare(ta, tb)
	}
	return len(a) - len(b)
}

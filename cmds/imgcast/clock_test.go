package main

import (
	"testing"
	"time"
)

func TestParseStartTime(t *testing.T) {
	for _, tt := range []struct {
		stat    string
		want    time.Duration
		wantErr bool
	}{
		{"1 (init) S 0 1 1 0 -1 4194560 1043 0 0 0 1 4 0 0 20 0 1 0 312 1234 56 18446744073709551615", 3120 * time.Millisecond, false},
		{"77 (my (odd) cmd) R 1 77 77 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 45 0 0", 450 * time.Millisecond, false},
		{"garbage", 0, true},
		{"1 (init) S 0 1", 0, true},
	} {
		got, err := parseStartTime(tt.stat)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseStartTime(%q) = %s, %v; want %s, err %v", tt.stat, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseKmsgRecord(t *testing.T) {
	for _, tt := range []struct {
		rec    string
		want   time.Duration
		wantOK bool
	}{
		{"6,612,1755399,-;Run /init as init process\n", 1755399 * time.Microsecond, true},
		{"6,612,1755399,-,caller=T1;Run /init as init process\n", 1755399 * time.Microsecond, true},
		{"6,611,1754769,-;x86/mm: Checked W+X mappings\n", 0, false},
		{"garbage as init process", 0, false},
		{"6,1;as init process", 0, false},
	} {
		got, ok := parseKmsgRecord([]byte(tt.rec), "as init process")
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("parseKmsgRecord(%q) = %s %v", tt.rec, got, ok)
		}
	}
}

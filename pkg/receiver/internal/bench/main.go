// Command bench compares imgcast's udp-receiver with udpcast's on the same
// lab network: udp-sender sends the same file to one receiver at a time,
// alternating between udpcast's receiver and ours, and the wall time and
// CPU time (user+sys, from the receiver process's rusage) of each run are
// printed with the ratios ours/theirs. It needs root (network namespaces);
// run it through `make bench-receiver`, which holds the heavy-job lock.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/imgcast/imgcast/internal/lab"
)

type result struct {
	wall, user, sys time.Duration
	rexmits         string
}

func (r result) cpu() time.Duration { return r.user + r.sys }

func main() {
	sizeMiB := flag.Int("size", 512, "file size in MiB")
	pairs := flag.Int("pairs", 3, "number of (udpcast, ours) run pairs")
	senderArgs := flag.String("sender-args", "", "extra udp-sender arguments, space separated (e.g. --nopointopoint)")
	receiverArgs := flag.String("receiver-args", "", "extra arguments for both receivers (e.g. --rcvbuf 4m, with net.core.rmem_max raised for udpcast)")
	flag.Parse()
	if err := run(*sizeMiB, *pairs, strings.Fields(*senderArgs), strings.Fields(*receiverArgs)); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(sizeMiB, pairs int, senderArgs, receiverArgs []string) error {
	dir, err := os.MkdirTemp("", "imgcast-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	ours := filepath.Join(dir, "udp-receiver")
	build := exec.Command("go", "build", "-o", ours, "./cmds/udp-receiver")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	theirs, err := exec.LookPath("udp-receiver")
	if err != nil {
		return fmt.Errorf("udpcast's udp-receiver: %w", err)
	}

	in := filepath.Join(dir, "in.bin")
	if err := randomFile(in, int64(sizeMiB)<<20); err != nil {
		return err
	}

	n, err := lab.New(94)
	if err != nil {
		return err
	}
	defer n.Close()
	snd, err := n.AddHost("snd", 2)
	if err != nil {
		return err
	}
	rcv, err := n.AddHost("rcv", 11)
	if err != nil {
		return err
	}

	// One checked run of ours first: the timed runs write to /dev/null.
	out := filepath.Join(dir, "out.bin")
	if _, err := transfer(snd, rcv, in, ours, out, senderArgs, receiverArgs); err != nil {
		return fmt.Errorf("check run: %w", err)
	}
	if o, err := exec.Command("cmp", in, out).CombinedOutput(); err != nil {
		return fmt.Errorf("check run: output differs: %s", o)
	}
	os.Remove(out)

	fmt.Printf("udp-sender -> one receiver, %d MiB, lab veth pair, %d pairs; sender args: %q\n\n", sizeMiB, pairs, strings.Join(senderArgs, " "))
	fmt.Printf("%-4s %-8s %9s %9s %9s %9s  %s\n", "pair", "receiver", "wall", "user", "sys", "cpu", "sender re-xmits")
	var theirsRes, oursRes []result
	for p := range pairs {
		order := []string{"udpcast", "ours"}
		if p%2 == 1 {
			order = []string{"ours", "udpcast"}
		}
		for _, who := range order {
			bin := theirs
			if who == "ours" {
				bin = ours
			}
			r, err := transfer(snd, rcv, in, bin, "/dev/null", senderArgs, receiverArgs)
			if err != nil {
				return fmt.Errorf("pair %d, %s: %w", p+1, who, err)
			}
			fmt.Printf("%-4d %-8s %9s %9s %9s %9s  %s\n", p+1, who, ms(r.wall), ms(r.user), ms(r.sys), ms(r.cpu()), r.rexmits)
			if who == "ours" {
				oursRes = append(oursRes, r)
			} else {
				theirsRes = append(theirsRes, r)
			}
		}
	}
	wallT, wallO := median(theirsRes, result.wallOf), median(oursRes, result.wallOf)
	cpuT, cpuO := median(theirsRes, result.cpu), median(oursRes, result.cpu)
	fmt.Printf("\nmedian   udpcast: wall %s cpu %s   ours: wall %s cpu %s\n", ms(wallT), ms(cpuT), ms(wallO), ms(cpuO))
	fmt.Printf("ratio ours/udpcast: wall %.2f  cpu %.2f   (targets: wall <= 1.00, cpu <= 0.80)\n",
		float64(wallO)/float64(wallT), float64(cpuO)/float64(cpuT))
	return nil
}

func (r result) wallOf() time.Duration { return r.wall }

func median(rs []result, f func(result) time.Duration) time.Duration {
	v := make([]time.Duration, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3fs", d.Seconds()) }

var rexmitRE = regexp.MustCompile(`re-xmits=(\d+)`)

// transfer runs udp-sender and one receiver (started after the sender,
// sending GO at once because its stdin is at EOF) and measures the
// receiver.
func transfer(snd, rcv *lab.Host, in, receiver, out string, senderArgs, receiverArgs []string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	sender := snd.Command(ctx, "udp-sender", append([]string{"-f", in, "--nokbd"}, senderArgs...)...)
	var sstderr bytes.Buffer
	sender.Stderr = &sstderr
	if err := sender.Start(); err != nil {
		return result{}, err
	}
	defer func() { _ = sender.Process.Kill(); _ = sender.Wait() }()
	time.Sleep(300 * time.Millisecond)

	r := rcv.Command(ctx, receiver, append([]string{"--file", out, "--exit-wait", "100"}, receiverArgs...)...)
	var rstderr bytes.Buffer
	r.Stderr = &rstderr
	begin := time.Now()
	err := r.Run()
	wall := time.Since(begin)
	if err != nil {
		return result{}, fmt.Errorf("%s: %v\n%s", filepath.Base(receiver), err, rstderr.String())
	}
	ru, ok := r.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return result{}, errors.New("no rusage")
	}
	_ = sender.Wait()
	m := rexmitRE.FindAllStringSubmatch(sstderr.String(), -1)
	rex := "?"
	if len(m) > 0 {
		rex = strings.TrimLeft(m[len(m)-1][1], "0")
		if rex == "" {
			rex = "0"
		}
	}
	return result{
		wall:    wall,
		user:    time.Duration(ru.Utime.Nano()),
		sys:     time.Duration(ru.Stime.Nano()),
		rexmits: rex,
	}, nil
}

func randomFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

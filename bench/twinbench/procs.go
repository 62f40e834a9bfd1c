package twinbench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tetherhub/tether/bench/figure"
)

// binaries returns a directory holding tether-cloud and tether-edge: $TETHER_BIN, ./bin (what
// make bench builds), or a fresh build into a temporary directory.
func binaries(ctx context.Context, tmp string) (string, error) {
	for _, dir := range []string{os.Getenv("TETHER_BIN"), "bin"} {
		if dir == "" {
			continue
		}
		if exists(filepath.Join(dir, "tether-cloud")) && exists(filepath.Join(dir, "tether-edge")) {
			return filepath.Abs(dir)
		}
	}
	dir := filepath.Join(tmp, "bin")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", dir+"/", "github.com/tetherhub/tether/cmd/tether-cloud", "github.com/tetherhub/tether/cmd/tether-edge")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the binaries (or set TETHER_BIN): %v: %s", err, out)
	}
	return dir, nil
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// proc is a program the benchmark started.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan error
}

// startProc starts bin/name with args, its output in logPath, and env added to this process's
// environment.
func startProc(bin, name, logPath string, env []string, args ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, cmd: exec.Command(filepath.Join(bin, name), args...), log: logPath, done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if len(env) > 0 {
		p.cmd.Env = append(os.Environ(), env...)
	}
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	go func() {
		p.done <- p.cmd.Wait()
		f.Close()
	}()
	return p, nil
}

// stop ends the process (SIGTERM, then SIGKILL after 15 s).
func (p *proc) stop() {
	if p == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGCONT) // in case it was paused
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) pause()  { p.cmd.Process.Signal(syscall.SIGSTOP) }
func (p *proc) resume() { p.cmd.Process.Signal(syscall.SIGCONT) }

// memSample is a process's resident memory in bytes: all of it (VmRSS), and its anonymous
// part (heap, stacks) and its file-backed part (the binary, the bbolt file's mapping).
type memSample struct{ rss, anon, file float64 }

// mem reads the process's resident memory from /proc.
func (p *proc) mem() (memSample, error) {
	var m memSample
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return m, err
	}
	defer f.Close()
	fields := map[string]*float64{"VmRSS:": &m.rss, "RssAnon:": &m.anon, "RssFile:": &m.file}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), "\t")
		if dst := fields[name]; ok && dst != nil {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				return m, fmt.Errorf("%s %s: %w", p.name, name, err)
			}
			*dst = kb * 1024
		}
	}
	if m.rss == 0 {
		return m, fmt.Errorf("no VmRSS for %s", p.name)
	}
	return m, nil
}

// cpu is the CPU time (user and system) the process has used, in seconds.
func (p *proc) cpu() (float64, error) { return figure.ProcCPU(p.cmd.Process.Pid) }

// waitHTTP waits until url answers 200.
func waitHTTP(ctx context.Context, url string, d time.Duration) error {
	return waitUntil(ctx, d, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func waitUntil(ctx context.Context, d time.Duration, ok func() bool) error {
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

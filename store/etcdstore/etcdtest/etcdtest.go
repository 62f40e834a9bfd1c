package etcdtest

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherhub/tether/internal/freeport"
)

// Server is one etcd process. Its methods are for the goroutine of the test that started it.
type Server struct {
	t       testing.TB
	bin     string
	dir     string // data and log
	client  string // host:port
	peer    string
	cmd     *exec.Cmd
	done    chan struct{}
	started int
}

// Start runs etcd and waits until it answers; the test's cleanup stops it.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := binary()
	if err != nil {
		t.Skip(err)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			t.Logf("--- etcd log (%s) ---\n%s", s.client, s.logTail(40))
		}
	})
	if err := s.startOnFreePorts(); err != nil {
		t.Fatal(err)
	}
	return s
}

// Run is Start for a program that is not a test (a benchmark): etcd keeps its data and log in
// dir, and the caller stops it with Kill. Only Endpoint and Kill may be called on it.
func Run(dir string) (*Server, error) {
	bin, err := binary()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, dir: dir}
	return s, s.startOnFreePorts()
}

// Kill ends the etcd that Run started.
func (s *Server) Kill() { s.kill() }

func binary() (string, error) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		bin = "/usr/bin/etcd"
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("etcd is not installed: install the Debian package etcd-server (apt-get install etcd-server)")
	}
	return bin, nil
}

func (s *Server) startOnFreePorts() error {
	for attempt := 1; ; attempt++ {
		// A port picked free may be taken by the time etcd binds it; pick again then.
		var err error
		if s.client, err = freeport.Addr(); err != nil {
			return err
		}
		if s.peer, err = freeport.Addr(); err != nil {
			return err
		}
		if err = s.start(); err == nil {
			return nil
		} else if attempt == 3 {
			return fmt.Errorf("etcd did not start: %w\n%s", err, s.logTail(40))
		}
	}
}

// Endpoint is the client URL.
func (s *Server) Endpoint() string { return "http://" + s.client }

// Stop stops etcd with SIGTERM and waits for it to exit; its data stays.
func (s *Server) Stop() {
	s.t.Helper()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.kill()
		s.t.Fatal("etcd did not stop within 10s of SIGTERM")
	}
	s.cmd = nil
}

// Restart starts the stopped etcd again on the same data dir and ports.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		s.t.Fatalf("etcd did not restart: %v\n%s", err, s.logTail(40))
	}
}

// Wipe stops etcd, deletes its data and starts a new, empty etcd cluster on the same ports, as
// an operator replacing a broken cluster would.
func (s *Server) Wipe() {
	s.t.Helper()
	s.Stop()
	if err := os.RemoveAll(filepath.Join(s.dir, "data")); err != nil {
		s.t.Fatal(err)
	}
	if err := s.start(); err != nil {
		s.t.Fatalf("etcd did not start after the wipe: %v\n%s", err, s.logTail(40))
	}
}

func (s *Server) start() error {
	s.started++
	log, err := os.OpenFile(filepath.Join(s.dir, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	fmt.Fprintf(log, "=== start %d: client %s peer %s\n", s.started, s.client, s.peer)
	cmd := exec.Command(s.bin,
		"--name", "test",
		"--data-dir", filepath.Join(s.dir, "data"),
		"--listen-client-urls", "http://"+s.client, "--advertise-client-urls", "http://"+s.client,
		"--listen-peer-urls", "http://"+s.peer, "--initial-advertise-peer-urls", "http://"+s.peer,
		"--initial-cluster", "test=http://"+s.peer,
		"--logger", "zap", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(20 * time.Second)
	for !s.healthy() {
		select {
		case <-done:
			s.cmd = nil
			return fmt.Errorf("etcd exited: %v", cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("etcd on %s not healthy after 20s", s.client)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func (s *Server) healthy() bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + s.client + "/health")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusOK && strings.Contains(string(b), `"true"`)
}

func (s *Server) kill() {
	if s.cmd != nil {
		s.cmd.Process.Kill()
		<-s.done
		s.cmd = nil
	}
}

func (s *Server) logTail(n int) string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "etcd.log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

package figure

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of the times in /proc: 100 on every Linux platform Go
// supports.
const clockTicks = 100

// ProcCPU is the CPU time (user and system) process pid has used, in seconds, from
// /proc/<pid>/stat. Its resolution is 10 ms: compare it over windows of seconds.
func ProcCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces: count fields after it.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc stat for pid %d", pid)
	}
	utime, err1 := strconv.ParseFloat(f[11], 64) // field 14
	stime, err2 := strconv.ParseFloat(f[12], 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc stat for pid %d", pid)
	}
	return (utime + stime) / clockTicks, nil
}

// SelfCPU is ProcCPU of this process.
func SelfCPU() (float64, error) { return ProcCPU(os.Getpid()) }

// MachineCPU is the CPU time every CPU of the machine has spent busy (not idle, not waiting for
// I/O), in seconds, from /proc/stat.
func MachineCPU() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, errors.New("no cpu line in /proc/stat")
	}
	var busy float64
	for i, v := range f[1:] {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, err
		}
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest times are already in user
			continue
		}
		busy += n
	}
	return busy / clockTicks, nil
}

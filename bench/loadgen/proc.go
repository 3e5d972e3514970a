package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Linux reports CPU time in clock ticks; USER_HZ is 100 on every mainstream kernel.
const clockTicks = 100.0

// cpuSeconds is user+system CPU time of a process so far.
func cpuSeconds(pid string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%s/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may contain spaces; fields are counted after its closing parenthesis.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / clockTicks
}

// statusKB reads a "Vm...:  123 kB" line of /proc/<pid>/status.
func statusKB(pid, key string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%s/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, key+":") {
			v, _ := strconv.ParseInt(strings.Fields(line[len(key)+1:])[0], 10, 64)
			return v
		}
	}
	return 0
}

// machineBusySeconds is the CPU time all processes on the machine have used so far (the
// first line of /proc/stat minus idle and iowait), to tell how much of a measurement window
// went to processes other than the server and the load generator.
func machineBusySeconds() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line := strings.SplitN(string(b), "\n", 2)[0]
	fields := strings.Fields(line)[1:]
	var busy float64
	for i, f := range fields {
		v, _ := strconv.ParseFloat(f, 64)
		// user nice system idle iowait irq softirq steal guest guest_nice; guest time is
		// already counted in user.
		if i == 3 || i == 4 || i >= 8 {
			continue
		}
		busy += v
	}
	return busy / clockTicks
}

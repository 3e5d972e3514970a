// Package clock reads CLOCK_MONOTONIC, the clock every process on the machine shares and
// Node's process.hrtime reads: the servers say when a change started by it and the load
// generator compares it with when responses arrived, without going through the wall clock
// (which Node only gives to the millisecond, and whose mapping from a monotonic clock drifts).
package clock

import (
	"time"

	"golang.org/x/sys/unix"
)

// Mono is CLOCK_MONOTONIC in nanoseconds.
func Mono() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err)
	}
	return ts.Nano()
}

// Base ties this process's time.Time to CLOCK_MONOTONIC.
type Base struct {
	at   time.Time
	mono int64
}

// NewBase reads both clocks together.
func NewBase() Base {
	at := time.Now()
	return Base{at: at, mono: Mono()}
}

// Time is the time.Time of a CLOCK_MONOTONIC reading, comparable with time.Now() in this
// process (Go's own monotonic clock is CLOCK_MONOTONIC too, so no drift between the two).
func (b Base) Time(mono int64) time.Time {
	return b.at.Add(time.Duration(mono - b.mono))
}

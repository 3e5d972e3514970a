// Package control is the small HTTP API every benchmark server exposes, so the load
// generator drives vsxds, go-control-plane and the stub the same way.
package control

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	"vsxds.bench/internal/clock"
)

// Changer applies endpoint change `gen` to one group ("one") or every group ("all") and
// returns the number of groups it changed.
type Changer func(scope string, gen int) (int, error)

// Serve answers GET /ready, POST /change?scope=one|all|noop&gen=N, POST /done, POST /gc and
// POST /quit on addr. It returns once the listener is bound. /change answers with the
// CLOCK_MONOTONIC time the change started, so latencies leave out the control request itself.
func Serve(addr string, change Changer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	mux.HandleFunc("/change", func(w http.ResponseWriter, r *http.Request) {
		gen, _ := strconv.Atoi(r.URL.Query().Get("gen"))
		startMono := clock.Mono()
		start := time.Now()
		groups, err := change(r.URL.Query().Get("scope"), gen)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"groups": groups, "applyMs": float64(time.Since(start).Microseconds()) / 1000, "startMonoNano": startMono})
	})
	mux.HandleFunc("/done", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	mux.HandleFunc("/gc", func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		debug.FreeOSMemory()
		w.Write([]byte("ok"))
	})
	mux.HandleFunc("/quit", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("bye"))
		go func() { time.Sleep(50 * time.Millisecond); os.Exit(0) }()
	})
	go http.Serve(ln, mux)
	return nil
}

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"vsxds.bench/internal/clock"
	"vsxds.bench/internal/fleet"
)

// Ties this process's clock to CLOCK_MONOTONIC, the clock servers report change starts by.
var monoBase = clock.NewBase()

type config struct {
	target, control, mode, pid, label string
	clients, conns, connectParallel   int
	shape                             fleet.Shape
	scopes                            []string
	repsOne, repsAll, repsNoop        int
	firstGen, warmup                  int
	timeout, settle, quiet            time.Duration
}

// epoch is one measured change: which groups it touches and how clients recognize it.
type epoch struct {
	id        int
	marker    []byte
	t0        time.Time
	affected  []bool
	results   chan sample
	responses atomic.Int64
	bytes     atomic.Int64
	byType    [3]atomic.Int64
}

type sample struct{ recv, ack time.Time }

type client struct {
	idx, group int
	names      []string
	doneEpoch  int
	synced     chan struct{}
	isSynced   bool
	syncedIn   time.Duration
	initBytes  int64
}

type loadgen struct {
	cfg          config
	current      atomic.Pointer[epoch]
	lastResponse atomic.Int64
	totalBytes   atomic.Int64
	totalResp    atomic.Int64
	errMu        sync.Mutex
	errors       []string
	failed       atomic.Int64
}

func runCmd(args []string) {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	var cfg config
	var scopes string
	fs.StringVar(&cfg.target, "target", "127.0.0.1:18000", "xDS server")
	fs.StringVar(&cfg.control, "control", "http://127.0.0.1:18100", "server's control API")
	fs.StringVar(&cfg.mode, "mode", "sotw", "sotw or delta")
	fs.StringVar(&cfg.pid, "pid", "", "server pid, for CPU and memory")
	fs.StringVar(&cfg.label, "label", "", "server name for the report")
	fs.IntVar(&cfg.clients, "clients", 1000, "simulated Envoys")
	fs.IntVar(&cfg.conns, "conns", 0, "HTTP/2 connections (default: one per 100 clients)")
	fs.IntVar(&cfg.connectParallel, "connect-parallel", 1000, "clients syncing at once while connecting")
	fs.IntVar(&cfg.shape.Groups, "groups", 100, "node groups")
	fs.IntVar(&cfg.shape.ClustersPerGroup, "clusters", 10, "clusters per group")
	fs.StringVar(&scopes, "scenarios", "one,all,noop", "changes to measure, in order (noop: the server re-sets every group's unchanged snapshot)")
	fs.IntVar(&cfg.repsOne, "reps-one", 5, "repetitions of the one-group change")
	fs.IntVar(&cfg.repsAll, "reps-all", 3, "repetitions of the all-groups change")
	fs.IntVar(&cfg.repsNoop, "reps-noop", 3, "repetitions of the unchanged re-set")
	fs.IntVar(&cfg.firstGen, "first-gen", 1, "first change number")
	fs.IntVar(&cfg.warmup, "warmup", 1, "unmeasured changes of each scope first")
	fs.DurationVar(&cfg.timeout, "timeout", 120*time.Second, "longest wait for one change")
	fs.DurationVar(&cfg.settle, "settle", 2*time.Second, "wait after connecting before reading memory")
	fs.DurationVar(&cfg.quiet, "quiet", 300*time.Millisecond, "silence that ends a change")
	fs.Parse(args)
	if cfg.conns <= 0 {
		cfg.conns = (cfg.clients + 99) / 100
	}
	cfg.scopes = strings.Split(scopes, ",")
	lg := &loadgen{cfg: cfg}
	out, err := lg.run()
	if err != nil {
		log.Fatal(err)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.Encode(out)
}

type connectResult struct {
	Seconds        float64 `json:"seconds"`
	SyncP50Ms      float64 `json:"syncP50Ms"`
	SyncP99Ms      float64 `json:"syncP99Ms"`
	ServerCPUSec   float64 `json:"serverCpuSec"`
	OtherCPUSec    float64 `json:"otherCpuSec"`
	RssBeforeKB    int64   `json:"rssBeforeKB"`
	RssAfterKB     int64   `json:"rssAfterKB"`
	RssAfterGcKB   int64   `json:"rssAfterGcKB"`
	BytesPerClient float64 `json:"bytesPerClient"`
}

type scenarioResult struct {
	Scope           string           `json:"scope"`
	Rep             int              `json:"rep"`
	Gen             int              `json:"gen"`
	Affected        int              `json:"affectedClients"`
	Completed       int              `json:"completed"`
	ApplyMs         float64          `json:"applyMs"`
	ControlMs       float64          `json:"controlMs"`
	RecvP50Ms       float64          `json:"recvP50Ms"`
	RecvP99Ms       float64          `json:"recvP99Ms"`
	AckP50Ms        float64          `json:"ackP50Ms"`
	AckP99Ms        float64          `json:"ackP99Ms"`
	AckMaxMs        float64          `json:"ackMaxMs"`
	ServerCPUSec    float64          `json:"serverCpuSec"`
	LoadgenCPUSec   float64          `json:"loadgenCpuSec"`
	OtherCPUSec     float64          `json:"otherCpuSec"`
	WallSec         float64          `json:"wallSec"`
	Responses       int64            `json:"responses"`
	Bytes           int64            `json:"bytes"`
	ResponsesByType map[string]int64 `json:"responsesByType"`
}

type output struct {
	Label           string           `json:"label"`
	Mode            string           `json:"mode"`
	Clients         int              `json:"clients"`
	Conns           int              `json:"conns"`
	Groups          int              `json:"groups"`
	Clusters        int              `json:"clustersPerGroup"`
	Connect         connectResult    `json:"connect"`
	Scenarios       []scenarioResult `json:"scenarios"`
	ServerPeakRssKB int64            `json:"serverPeakRssKB"`
	LoadgenPeakKB   int64            `json:"loadgenPeakRssKB"`
	TotalResponses  int64            `json:"totalResponses"`
	TotalBytes      int64            `json:"totalBytes"`
	Failed          int64            `json:"failedStreams"`
	Errors          []string         `json:"errors,omitempty"`
}

func (lg *loadgen) fail(err error) {
	lg.failed.Add(1)
	lg.errMu.Lock()
	if len(lg.errors) < 10 {
		lg.errors = append(lg.errors, err.Error())
	}
	lg.errMu.Unlock()
}

func (lg *loadgen) run() (*output, error) {
	cfg := lg.cfg
	out := &output{Label: cfg.label, Mode: cfg.mode, Clients: cfg.clients, Conns: cfg.conns, Groups: cfg.shape.Groups, Clusters: cfg.shape.ClustersPerGroup}
	httpc := &http.Client{Timeout: 5 * time.Minute}
	post := func(path string) ([]byte, error) {
		resp, err := httpc.Post(cfg.control+path, "text/plain", nil)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return nil, fmt.Errorf("%s: %s", path, body)
		}
		return body, nil
	}

	conns := make([]*grpc.ClientConn, cfg.conns)
	for i := range conns {
		cc, err := grpc.NewClient(cfg.target,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			// Envoy's HTTP/2 windows are large; small ones would make the client the bottleneck.
			grpc.WithInitialWindowSize(16<<20),
			grpc.WithInitialConnWindowSize(64<<20),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)),
		)
		if err != nil {
			return nil, err
		}
		conns[i] = cc
	}

	post("/gc")
	time.Sleep(500 * time.Millisecond)
	out.Connect.RssBeforeKB = statusKB(cfg.pid, "VmRSS")
	cpu0, self0, busy0 := cpuSeconds(cfg.pid), cpuSeconds("self"), machineBusySeconds()

	clients := make([]*client, cfg.clients)
	sem := make(chan struct{}, cfg.connectParallel)
	start := time.Now()
	ctx := context.Background()
	for i := range clients {
		g := i % cfg.shape.Groups
		c := &client{idx: i, group: g, names: cfg.shape.ClusterNames(g), synced: make(chan struct{})}
		clients[i] = c
		sem <- struct{}{}
		cc := conns[i%len(conns)]
		go func() {
			if err := lg.runStream(ctx, cc, c, start, sem); err != nil {
				lg.fail(fmt.Errorf("client %d: %w", c.idx, err))
			}
			if !c.isSynced {
				// A stream that died while connecting must not hold up the others.
				c.isSynced = true
				close(c.synced)
				<-sem
			}
		}()
	}
	syncTimes := make([]float64, 0, len(clients))
	var initBytes int64
	deadline := time.After(10 * time.Minute)
	for _, c := range clients {
		select {
		case <-c.synced:
		case <-deadline:
			return nil, fmt.Errorf("clients did not sync within 10 minutes (failed streams: %d, errors: %v)", lg.failed.Load(), lg.errors)
		}
		syncTimes = append(syncTimes, ms(c.syncedIn))
		initBytes += c.initBytes
	}
	out.Connect.Seconds = time.Since(start).Seconds()
	if f := lg.failed.Load(); f > 0 {
		return nil, fmt.Errorf("%d of %d streams failed while connecting: %v", f, len(clients), lg.errors)
	}
	sort.Float64s(syncTimes)
	out.Connect.SyncP50Ms = pct(syncTimes, 50)
	out.Connect.SyncP99Ms = pct(syncTimes, 99)
	out.Connect.BytesPerClient = float64(initBytes) / float64(len(clients))
	lg.waitQuiet(cfg.quiet)
	out.Connect.ServerCPUSec = cpuSeconds(cfg.pid) - cpu0
	out.Connect.OtherCPUSec = max(0, machineBusySeconds()-busy0-out.Connect.ServerCPUSec-(cpuSeconds("self")-self0))
	log.Printf("%s %s: %d clients synced in %.1fs", cfg.label, cfg.mode, cfg.clients, out.Connect.Seconds)

	time.Sleep(cfg.settle)
	out.Connect.RssAfterKB = statusKB(cfg.pid, "VmRSS")
	post("/gc")
	time.Sleep(1 * time.Second)
	out.Connect.RssAfterGcKB = statusKB(cfg.pid, "VmRSS")

	gen := cfg.firstGen
	// A control plane that has been running has its push path compiled and warm; so should
	// the measured one, whatever its runtime.
	for _, scope := range cfg.scopes {
		for i := 0; i < cfg.warmup; i++ {
			lg.waitQuiet(cfg.quiet)
			if _, err := lg.measure(scope, 0, gen, clients, post, true); err != nil {
				return nil, err
			}
			post("/done?scope=warmup")
			gen++
		}
	}
	for _, scope := range cfg.scopes {
		reps := map[string]int{"one": cfg.repsOne, "all": cfg.repsAll, "noop": cfg.repsNoop}[scope]
		for rep := 1; rep <= reps; rep++ {
			lg.waitQuiet(cfg.quiet)
			res, err := lg.measure(scope, rep, gen, clients, post, false)
			if err != nil {
				return nil, err
			}
			log.Printf("%s %s N=%d %s #%d: p50 %.1fms p99 %.1fms max %.1fms (%d/%d), server CPU %.2fs",
				cfg.label, cfg.mode, cfg.clients, scope, rep, res.AckP50Ms, res.AckP99Ms, res.AckMaxMs, res.Completed, res.Affected, res.ServerCPUSec)
			out.Scenarios = append(out.Scenarios, *res)
			post("/done?scope=" + scope)
			gen++
		}
	}
	out.ServerPeakRssKB = statusKB(cfg.pid, "VmHWM")
	out.LoadgenPeakKB = statusKB("self", "VmHWM")
	out.TotalResponses, out.TotalBytes = lg.totalResp.Load(), lg.totalBytes.Load()
	out.Failed = lg.failed.Load()
	out.Errors = lg.errors
	return out, nil
}

func (lg *loadgen) measure(scope string, rep, gen int, clients []*client, post func(string) ([]byte, error), warmup bool) (*scenarioResult, error) {
	cfg := lg.cfg
	e := &epoch{id: gen, marker: fleet.Marker(gen), affected: make([]bool, cfg.shape.Groups)}
	switch scope {
	case "one":
		e.affected[0] = true
	case "all":
		for g := range e.affected {
			e.affected[g] = true
		}
	}
	expected := 0
	for _, c := range clients {
		if e.affected[c.group] {
			expected++
		}
	}
	e.results = make(chan sample, expected)
	cpu0, self0, busy0 := cpuSeconds(cfg.pid), cpuSeconds("self"), machineBusySeconds()
	e.t0 = time.Now()
	lg.current.Store(e)
	body, err := post(fmt.Sprintf("/change?scope=%s&gen=%d&warmup=%t", scope, gen, warmup))
	if err != nil {
		return nil, err
	}
	posted := time.Now()
	res := &scenarioResult{Scope: scope, Rep: rep, Gen: gen, Affected: expected, ControlMs: ms(posted.Sub(e.t0))}
	var applied struct {
		ApplyMs       float64 `json:"applyMs"`
		StartMonoNano int64   `json:"startMonoNano"`
	}
	json.Unmarshal(body, &applied)
	res.ApplyMs = applied.ApplyMs
	// Latencies count from when the server started applying the change (same machine, same
	// CLOCK_MONOTONIC), so the control request, which is no part of xDS, does not count against a server.
	t0 := e.t0
	if start := monoBase.Time(applied.StartMonoNano); applied.StartMonoNano > 0 && !start.Before(e.t0) && !start.After(posted) {
		t0 = start
	} else {
		log.Printf("%s: the server's start time %d is not between the control request and its answer; counting from the request", cfg.label, applied.StartMonoNano)
	}

	recv := make([]float64, 0, expected)
	ack := make([]float64, 0, expected)
	timeout := time.After(cfg.timeout)
wait:
	for len(ack) < expected {
		select {
		case s := <-e.results:
			recv = append(recv, ms(s.recv.Sub(t0)))
			ack = append(ack, ms(s.ack.Sub(t0)))
		case <-timeout:
			break wait
		}
	}
	lg.waitQuiet(cfg.quiet)
	lg.current.Store(nil)
	res.ServerCPUSec = cpuSeconds(cfg.pid) - cpu0
	res.LoadgenCPUSec = cpuSeconds("self") - self0
	res.OtherCPUSec = max(0, machineBusySeconds()-busy0-res.ServerCPUSec-res.LoadgenCPUSec)
	res.WallSec = time.Since(e.t0).Seconds()
	res.Completed = len(ack)
	sort.Float64s(recv)
	sort.Float64s(ack)
	res.RecvP50Ms, res.RecvP99Ms = pct(recv, 50), pct(recv, 99)
	res.AckP50Ms, res.AckP99Ms, res.AckMaxMs = pct(ack, 50), pct(ack, 99), pct(ack, 100)
	if res.Completed < expected {
		// Clients that never saw the change count as the timeout, so they cannot flatter p99.
		res.AckMaxMs = ms(cfg.timeout)
		res.AckP99Ms = max(res.AckP99Ms, ms(cfg.timeout))
	}
	res.Responses, res.Bytes = e.responses.Load(), e.bytes.Load()
	res.ResponsesByType = map[string]int64{"CDS": e.byType[0].Load(), "EDS": e.byType[1].Load(), "LDS": e.byType[2].Load()}
	return res, nil
}

// waitQuiet returns once no client has received anything for d.
func (lg *loadgen) waitQuiet(d time.Duration) {
	for {
		last := time.Unix(0, lg.lastResponse.Load())
		idle := time.Since(last)
		if idle >= d {
			return
		}
		time.Sleep(d - idle)
	}
}

func typeIndex(typeURL string) int {
	switch typeURL {
	case fleet.ClusterType:
		return 0
	case fleet.EndpointType:
		return 1
	default:
		return 2
	}
}

// received does the bookkeeping common to both protocols; it returns the epoch the client
// just completed, if the response carries that epoch's change.
func (lg *loadgen) received(c *client, r *response) *epoch {
	lg.lastResponse.Store(r.at.UnixNano())
	lg.totalResp.Add(1)
	lg.totalBytes.Add(int64(r.size))
	e := r.epoch
	if e == nil {
		return nil
	}
	e.responses.Add(1)
	e.bytes.Add(int64(r.size))
	e.byType[typeIndex(r.typeURL)].Add(1)
	if !r.marked || r.typeURL != fleet.EndpointType || c.doneEpoch == e.id {
		return nil
	}
	return e
}

// Envoy's request order: clusters first, then their endpoints, then listeners once the
// clusters are warm. A client is synced when it has ACKed all three.
func nextSubscription(typeURL string) (string, bool) {
	switch typeURL {
	case fleet.ClusterType:
		return fleet.EndpointType, true
	case fleet.EndpointType:
		return fleet.ListenerType, true
	}
	return "", false
}

func (lg *loadgen) runStream(ctx context.Context, cc *grpc.ClientConn, c *client, start time.Time, sem chan struct{}) error {
	delta := lg.cfg.mode == "delta"
	method := adsService + "StreamAggregatedResources"
	if delta {
		method = adsService + "DeltaAggregatedResources"
	}
	codec := &wireCodec{lg: lg, group: c.group}
	st, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method, grpc.ForceCodecV2(codec))
	if err != nil {
		return err
	}
	node, err := proto.Marshal(fleet.Node(c.group, c.idx))
	if err != nil {
		return err
	}
	send := func(b []byte) error { return st.SendMsg(&rawFrame{b}) }
	if err := send(request(delta, node, fleet.ClusterType, "", "", nil)); err != nil {
		return err
	}
	awaiting := fleet.ClusterType
	for {
		r := &response{}
		if err := st.RecvMsg(r); err != nil {
			return err
		}
		e := lg.received(c, r)
		// SotW EDS requests repeat the names; a delta ACK carries none, subscriptions persist.
		var names []string
		if r.typeURL == fleet.EndpointType && !delta {
			names = c.names
		}
		if err := send(request(delta, nil, r.typeURL, r.version, r.nonce, names)); err != nil {
			return err
		}
		if e != nil {
			c.doneEpoch = e.id
			e.results <- sample{recv: r.at, ack: time.Now()}
		}
		if c.isSynced || r.typeURL != awaiting {
			continue
		}
		c.initBytes += int64(r.size)
		next, more := nextSubscription(r.typeURL)
		if !more {
			c.syncedIn = time.Since(start)
			c.isSynced = true
			close(c.synced)
			<-sem
			continue
		}
		awaiting = next
		var subscribe []string
		if next == fleet.EndpointType {
			subscribe = c.names
		}
		if err := send(request(delta, nil, next, "", "", subscribe)); err != nil {
			return err
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// pct is the nearest-rank percentile of sorted values; 100 is the maximum.
func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.999999) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

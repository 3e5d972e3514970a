package main

// `loadgen fleet`: simulated Envoys spread over several xDS servers (replicas behind one
// Kubernetes Service). Each client has an HTTP/2 connection of its own, as an Envoy has; on
// every (re)connect it picks one of the servers at random, as kube-proxy does for a new
// connection to a ClusterIP, and when its stream ends (GOAWAY and the grace after it, a replica
// stopping, a refused connection) it reconnects after a jittered backoff, as Envoy does. A
// reconnect carries what the client holds, as Envoy sends it: SotW `version_info` per type,
// delta `initial_resource_versions`.
//
// Every response is classified against what the client held of its type:
//   initial  the client held nothing of the type yet (its first sync);
//   changed  it changes what the client holds;
//   unchanged it changes nothing (SotW: the same resources, whatever the version; delta: every
//            resource in it is held with the same bytes and every removal names one not held),
//            split into "after reconnect" (the first response of its type on a stream that is
//            not the client's first: what reconnect seeding must avoid) and "other";
//   empty    (delta) no resources and no removals: a subscription's first answer.
//
// It prints one JSON line per --interval (`{"kind":"interval",...}`: streams open on each
// server at the end of the interval, and counts during it), and when its standard input closes
// it ends every stream and prints `{"kind":"summary",...}`.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/maphash"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"vsxds.bench/internal/fleet"
)

type fleetConfig struct {
	servers                []string
	mode                   string
	clients, groups        int
	interval, ramp         time.Duration
	backoffBase, backoffMx time.Duration
	seed                   uint64
	forget                 bool
}

// The three types in Envoy's order, and their index in counters.
var fleetTypes = [3]string{fleet.ClusterType, fleet.EndpointType, fleet.ListenerType}
var fleetTypeNames = [3]string{"CDS", "EDS", "LDS"}

func fleetTypeIndex(typeURL string) int {
	for i, t := range fleetTypes {
		if t == typeURL {
			return i
		}
	}
	return -1
}

const (
	classInitial = iota
	classChanged
	classUnchangedReconnect
	classUnchangedOther
	classEmpty
	numClasses
)

var classNames = [numClasses]string{"initial", "changed", "unchangedAfterReconnect", "unchangedOther", "empty"}

// counters are cumulative; each interval row reports their growth.
type fleetCounters struct {
	streamsOpened   atomic.Int64 // every stream that was established
	reconnects      atomic.Int64 // established streams after a client's first
	connectFailures atomic.Int64 // attempts that never established a stream
	responses       [numClasses]atomic.Int64
	unchangedByType [3]atomic.Int64
	// SotW unchanged responses that carried the very version the client held.
	unchangedSameVersion atomic.Int64
	bytes                atomic.Int64
}

type fleetGen struct {
	cfg      fleetConfig
	hashSeed maphash.Seed
	onServer []atomic.Int64
	synced   atomic.Int64 // clients holding all three types
	counters fleetCounters
	endMu    sync.Mutex
	endCodes map[string]int64 // why streams ended
}

// heldResource is one resource a delta client holds.
type heldResource struct {
	version, edsName string
	hash             uint64
}

type fleetTypeState struct {
	has     bool
	version string // SotW version_info
	digest  uint64 // SotW: sum of the resources' hashes (order does not matter)
	held    map[string]heldResource
}

type fleetClient struct {
	idx, group int
	node       []byte
	rng        *rand.Rand
	types      [3]fleetTypeState
	edsNames   []string
	streams    int // established so far
	synced     bool
}

func fleetCmd(args []string) {
	fs := flag.NewFlagSet("fleet", flag.ExitOnError)
	var cfg fleetConfig
	var servers string
	fs.StringVar(&servers, "servers", "127.0.0.1:18000", "xDS servers, comma-separated (the replicas behind one Service)")
	fs.StringVar(&cfg.mode, "mode", "sotw", "sotw or delta")
	fs.IntVar(&cfg.clients, "clients", 1000, "simulated Envoys, each on a connection of its own")
	fs.IntVar(&cfg.groups, "groups", 100, "node groups (clients spread evenly)")
	fs.DurationVar(&cfg.interval, "interval", 5*time.Second, "report period")
	fs.DurationVar(&cfg.ramp, "ramp", 2*time.Second, "clients start evenly over this time")
	fs.DurationVar(&cfg.backoffBase, "backoff-base", 250*time.Millisecond, "reconnect backoff base (the example bootstraps' Envoy retry_back_off)")
	fs.DurationVar(&cfg.backoffMx, "backoff-max", time.Second, "reconnect backoff limit")
	fs.Uint64Var(&cfg.seed, "seed", 1, "random seed of the server picks")
	fs.BoolVar(&cfg.forget, "forget", false, "reconnect without saying what the client holds (no version_info, no initial_resource_versions): the control that shows re-sent responses are counted")
	fs.Parse(args)
	cfg.servers = strings.Split(servers, ",")
	if cfg.mode != "sotw" && cfg.mode != "delta" {
		log.Fatalf("--mode must be sotw or delta")
	}
	g := &fleetGen{cfg: cfg, hashSeed: maphash.MakeSeed(), onServer: make([]atomic.Int64, len(cfg.servers)), endCodes: map[string]int64{}}
	g.run(os.Stdin, os.Stdout)
}

type fleetRow struct {
	Kind            string           `json:"kind"`
	T               float64          `json:"t"`
	Streams         []int64          `json:"streams"`
	Synced          int64            `json:"synced"`
	StreamsOpened   int64            `json:"streamsOpened"`
	Reconnects      int64            `json:"reconnects"`
	ConnectFailures int64            `json:"connectFailures"`
	Responses       map[string]int64 `json:"responses"`
	UnchangedByType map[string]int64 `json:"unchangedByType"`
	SameVersion     int64            `json:"unchangedSameVersion"`
	Bytes           int64            `json:"bytes"`
	StreamEnds      map[string]int64 `json:"streamEnds,omitempty"`
	Servers         []string         `json:"servers,omitempty"`
	Mode            string           `json:"mode,omitempty"`
	Clients         int              `json:"clients,omitempty"`
}

// snapshot is the counters so far (cumulative).
func (g *fleetGen) snapshot(kind string, start time.Time) fleetRow {
	c := &g.counters
	r := fleetRow{Kind: kind, T: time.Since(start).Seconds(), Synced: g.synced.Load(),
		StreamsOpened: c.streamsOpened.Load(), Reconnects: c.reconnects.Load(), ConnectFailures: c.connectFailures.Load(),
		Responses: map[string]int64{}, UnchangedByType: map[string]int64{}, SameVersion: c.unchangedSameVersion.Load(), Bytes: c.bytes.Load()}
	for i := range g.onServer {
		r.Streams = append(r.Streams, g.onServer[i].Load())
	}
	for i, n := range classNames {
		r.Responses[n] = c.responses[i].Load()
	}
	for i, n := range fleetTypeNames {
		r.UnchangedByType[n] = c.unchangedByType[i].Load()
	}
	return r
}

// minus turns cumulative counts into the growth since prev (streams and synced stay gauges).
func (r fleetRow) minus(prev fleetRow) fleetRow {
	out := r
	out.StreamsOpened -= prev.StreamsOpened
	out.Reconnects -= prev.Reconnects
	out.ConnectFailures -= prev.ConnectFailures
	out.SameVersion -= prev.SameVersion
	out.Bytes -= prev.Bytes
	out.Responses, out.UnchangedByType = map[string]int64{}, map[string]int64{}
	for k, v := range r.Responses {
		out.Responses[k] = v - prev.Responses[k]
	}
	for k, v := range r.UnchangedByType {
		out.UnchangedByType[k] = v - prev.UnchangedByType[k]
	}
	return out
}

func (g *fleetGen) run(stdin io.Reader, stdout io.Writer) {
	cfg := g.cfg
	ctx, cancel := context.WithCancel(context.Background())
	enc := json.NewEncoder(stdout)
	start := time.Now()
	enc.Encode(map[string]any{"kind": "start", "servers": cfg.servers, "mode": cfg.mode, "clients": cfg.clients})
	var wg sync.WaitGroup
	for i := 0; i < cfg.clients; i++ {
		grp := i % cfg.groups
		node, err := proto.Marshal(fleet.Node(grp, i))
		if err != nil {
			log.Fatal(err)
		}
		c := &fleetClient{idx: i, group: grp, node: node, rng: rand.New(rand.NewPCG(cfg.seed, uint64(i)))}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-time.After(time.Duration(int64(cfg.ramp) * int64(i) / int64(cfg.clients))):
			case <-ctx.Done():
				return
			}
			g.client(ctx, c)
		}()
	}
	stop := make(chan struct{})
	go func() {
		io.Copy(io.Discard, bufio.NewReader(stdin))
		close(stop)
	}()
	tick := time.NewTicker(cfg.interval)
	prev := g.snapshot("interval", start)
loop:
	for {
		select {
		case <-tick.C:
			now := g.snapshot("interval", start)
			enc.Encode(now.minus(prev))
			prev = now
		case <-stop:
			break loop
		}
	}
	tick.Stop()
	// The summary counts only what happened before the streams were ended on purpose.
	sum := g.snapshot("summary", start)
	g.endMu.Lock()
	sum.StreamEnds = g.endCodes
	g.endMu.Unlock()
	sum.Servers, sum.Mode, sum.Clients = cfg.servers, cfg.mode, cfg.clients
	cancel()
	wg.Wait()
	enc.Encode(sum)
}

// backoff is Envoy's jittered exponential backoff: uniform in [0, min(base·2^attempt, max)).
func (g *fleetGen) backoff(c *fleetClient, attempt int) time.Duration {
	limit := g.cfg.backoffBase << min(attempt, 16)
	if limit > g.cfg.backoffMx || limit <= 0 {
		limit = g.cfg.backoffMx
	}
	return time.Duration(c.rng.Int64N(int64(limit)) + 1)
}

func (g *fleetGen) client(ctx context.Context, c *fleetClient) {
	for attempt := 0; ctx.Err() == nil; {
		server := c.rng.IntN(len(g.cfg.servers))
		established, err := g.connect(ctx, c, server)
		if ctx.Err() != nil {
			return
		}
		code := "EOF"
		if err != nil && !errors.Is(err, io.EOF) {
			code = status.Code(err).String()
		}
		g.endMu.Lock()
		g.endCodes[code]++
		g.endMu.Unlock()
		if established {
			attempt = 0
		} else {
			g.counters.connectFailures.Add(1)
			attempt++
		}
		select {
		case <-time.After(g.backoff(c, attempt)):
		case <-ctx.Done():
			return
		}
	}
}

// connect runs one stream on a new connection to the server; it returns when the stream ends.
func (g *fleetGen) connect(ctx context.Context, c *fleetClient, server int) (established bool, err error) {
	cc, err := grpc.NewClient("passthrough:///"+g.cfg.servers[server],
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)),
	)
	if err != nil {
		return false, err
	}
	defer cc.Close()
	delta := g.cfg.mode == "delta"
	method := adsService + "StreamAggregatedResources"
	if delta {
		method = adsService + "DeltaAggregatedResources"
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := cc.NewStream(sctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return false, err
	}
	send := func(b []byte) error { return st.SendMsg(&rawFrame{b}) }
	// What Envoy sends on a new stream: every type it subscribed to, with what it holds (on
	// its first stream, only CDS); the node on the first message only.
	node := c.node
	for t := range fleetTypes {
		// Envoy subscribes to a type after the first response of the one before it.
		if t > 0 && !c.types[t-1].has {
			break
		}
		if err := send(g.subscribe(c, t, node)); err != nil {
			return false, err
		}
		node = nil
	}
	// Established: the connection is up and the stream's first request went out on it.
	established = true
	g.counters.streamsOpened.Add(1)
	if c.streams > 0 {
		g.counters.reconnects.Add(1)
	}
	reconnected := c.streams > 0
	c.streams++
	g.onServer[server].Add(1)
	defer g.onServer[server].Add(-1)
	var firstOnStream [3]bool
	for {
		f := &rawFrame{}
		if err := st.RecvMsg(f); err != nil {
			return true, err
		}
		r, perr := parseFleetResponse(f.b, delta, g.hashSeed)
		if perr != nil {
			return true, perr
		}
		t := fleetTypeIndex(r.typeURL)
		if t < 0 {
			return true, fmt.Errorf("response of unknown type %q", r.typeURL)
		}
		g.counters.bytes.Add(int64(len(f.b)))
		first := !firstOnStream[t]
		firstOnStream[t] = true
		wasHeld := c.types[t].has
		g.classify(c, t, r, delta, reconnected && first)
		var ack []byte
		if delta {
			ack = request(true, nil, r.typeURL, "", r.nonce, nil)
		} else {
			var names []string
			if t == 1 {
				names = c.edsNames
			}
			ack = request(false, nil, r.typeURL, r.version, r.nonce, names)
		}
		if err := send(ack); err != nil {
			return true, err
		}
		// The next type follows the first response of the previous one (Envoy's order).
		if !wasHeld && t+1 < len(fleetTypes) {
			if err := send(g.subscribe(c, t+1, nil)); err != nil {
				return true, err
			}
		}
		if !c.synced && c.types[0].has && c.types[1].has && c.types[2].has {
			c.synced = true
			g.synced.Add(1)
		}
	}
}

// subscribe is a stream's first request of type t, carrying what the client holds of it.
func (g *fleetGen) subscribe(c *fleetClient, t int, node []byte) []byte {
	typeURL := fleetTypes[t]
	st := &c.types[t]
	var names []string
	if t == 1 {
		names = c.edsNames
	}
	if g.cfg.forget {
		return request(g.cfg.mode == "delta", node, typeURL, "", "", names)
	}
	if g.cfg.mode == "delta" {
		b := request(true, node, typeURL, "", "", names)
		// initial_resource_versions (5): map<string, string>.
		for name, h := range st.held {
			var e []byte
			e = appendString(e, 1, name)
			e = appendString(e, 2, h.version)
			b = protowire.AppendTag(b, 5, protowire.BytesType)
			b = protowire.AppendBytes(b, e)
		}
		return b
	}
	return request(false, node, typeURL, st.version, "", names)
}

func (g *fleetGen) classify(c *fleetClient, t int, r *fleetResponse, delta, afterReconnect bool) {
	st := &c.types[t]
	class := classChanged
	switch {
	case delta && len(r.resources) == 0 && len(r.removed) == 0:
		class = classEmpty
	case !st.has:
		class = classInitial
	case delta:
		changed := false
		for _, res := range r.resources {
			if h, ok := st.held[res.name]; !ok || h.hash != res.hash {
				changed = true
			}
		}
		for _, name := range r.removed {
			if _, ok := st.held[name]; ok {
				changed = true
			}
		}
		if !changed {
			class = classUnchangedOther
		}
	default:
		if r.digest == st.digest {
			class = classUnchangedOther
			if r.version == st.version {
				g.counters.unchangedSameVersion.Add(1)
			}
		}
	}
	if class == classUnchangedOther {
		g.counters.unchangedByType[t].Add(1)
		if afterReconnect {
			class = classUnchangedReconnect
		}
	}
	g.counters.responses[class].Add(1)
	// Apply it.
	st.has = true
	if delta {
		if st.held == nil {
			st.held = map[string]heldResource{}
		}
		for _, res := range r.resources {
			st.held[res.name] = heldResource{res.version, res.edsName, res.hash}
		}
		for _, name := range r.removed {
			delete(st.held, name)
		}
	} else {
		st.version, st.digest = r.version, r.digest
	}
	if t == 0 {
		// EDS follows the clusters' names (their EDS service name when they have one).
		c.edsNames = c.edsNames[:0]
		if delta {
			for _, h := range st.held {
				c.edsNames = append(c.edsNames, h.edsName)
			}
			sort.Strings(c.edsNames)
		} else {
			c.edsNames = append(c.edsNames, r.edsNames...)
		}
	}
}

type fleetResource struct {
	name, version, edsName string
	hash                   uint64
}

type fleetResponse struct {
	typeURL, version, nonce string
	resources               []fleetResource
	removed                 []string
	digest                  uint64
	edsNames                []string
}

// clusterNames reads an Any holding a Cluster: its name (1) and EDS service name (3 → 2).
func clusterNames(anyBytes []byte) (name, eds string) {
	fields(anyBytes, func(num protowire.Number, val []byte) {
		if num != 2 { // Any.value
			return
		}
		fields(val, func(num protowire.Number, v []byte) {
			switch num {
			case 1:
				name = string(v)
			case 3:
				fields(v, func(num protowire.Number, s []byte) {
					if num == 2 {
						eds = string(s)
					}
				})
			}
		})
	})
	if eds == "" {
		eds = name
	}
	return name, eds
}

// parseFleetResponse decodes a DiscoveryResponse (version_info 1, resources 2 as Any,
// type_url 4, nonce 5) or a DeltaDiscoveryResponse (system_version_info 1, resources 2 as
// Resource {version 1, resource 2, name 3}, type_url 4, nonce 5, removed_resources 6).
func parseFleetResponse(b []byte, delta bool, seed maphash.Seed) (*fleetResponse, error) {
	r := &fleetResponse{}
	var items [][]byte
	err := fields(b, func(num protowire.Number, val []byte) {
		switch num {
		case 1:
			r.version = string(val)
		case 2:
			items = append(items, val)
		case 4:
			r.typeURL = string(val)
		case 5:
			r.nonce = string(val)
		case 6:
			if delta {
				r.removed = append(r.removed, string(val))
			}
		}
	})
	if err != nil {
		return nil, err
	}
	clusters := r.typeURL == fleet.ClusterType
	for _, item := range items {
		if !delta {
			r.digest += maphash.Bytes(seed, item)
			if clusters {
				_, eds := clusterNames(item)
				r.edsNames = append(r.edsNames, eds)
			}
			continue
		}
		var res fleetResource
		var body []byte
		if err := fields(item, func(num protowire.Number, v []byte) {
			switch num {
			case 1:
				res.version = string(v)
			case 2:
				body = v
			case 3:
				res.name = string(v)
			}
		}); err != nil {
			return nil, err
		}
		res.hash = maphash.Bytes(seed, body)
		if clusters {
			_, res.edsName = clusterNames(body)
		}
		r.resources = append(r.resources, res)
	}
	return r, nil
}

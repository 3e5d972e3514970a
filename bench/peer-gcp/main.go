// The peer: the benchmark fleet served by go-control-plane's SnapshotCache and ADS server,
// used the way its documentation shows, with one snapshot per node group.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"vsxds.bench/internal/control"
	"vsxds.bench/internal/fleet"
)

// groupHash puts every proxy of one node group on one snapshot, as vsxds does.
type groupHash struct{}

func (groupHash) ID(node *core.Node) string { return fleet.GroupKeyOfNode(node) }

type group struct {
	clusters, listeners cachev3.Resources
	assignments         []types.Resource
	snapshot            *cachev3.Snapshot
}

func main() {
	listen := flag.String("listen", "127.0.0.1:18000", "xDS address")
	controlAddr := flag.String("control", "127.0.0.1:18100", "control HTTP address")
	shape := fleet.Shape{}
	flag.IntVar(&shape.Groups, "groups", 100, "node groups")
	flag.IntVar(&shape.ClustersPerGroup, "clusters", 10, "listeners and clusters per group")
	flag.IntVar(&shape.EndpointsPerCluster, "endpoints", 5, "endpoints per cluster")
	flag.Parse()

	cache := cachev3.NewSnapshotCache(true, groupHash{}, nil)
	groups := make([]*group, shape.Groups)
	ctx := context.Background()
	for g := range groups {
		var ls, cs []types.Resource
		gr := &group{}
		for k := 0; k < shape.ClustersPerGroup; k++ {
			ls = append(ls, fleet.Listener(g, k))
			cs = append(cs, fleet.Cluster(g, k))
			gr.assignments = append(gr.assignments, shape.Assignment(g, k, 0))
		}
		gr.listeners = cachev3.NewResources("1", ls)
		gr.clusters = cachev3.NewResources("1", cs)
		groups[g] = gr
		gr.snapshot = snapshotOf(gr, "0")
		if err := cache.SetSnapshot(ctx, fleet.GroupKey(g), gr.snapshot); err != nil {
			log.Fatal(err)
		}
	}

	var mu sync.Mutex
	err := control.Serve(*controlAddr, func(scope string, gen int) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		affected := []int{0}
		switch scope {
		case "noop":
			for g, gr := range groups {
				if err := cache.SetSnapshot(ctx, fleet.GroupKey(g), gr.snapshot); err != nil {
					return 0, err
				}
			}
			return 0, nil
		case "one":
		case "all":
			affected = make([]int, shape.Groups)
			for g := range affected {
				affected[g] = g
			}
		default:
			return 0, fmt.Errorf("scope must be one, all or noop")
		}
		for _, g := range affected {
			gr := groups[g]
			next := append([]types.Resource(nil), gr.assignments...)
			next[0] = shape.Assignment(g, 0, gen)
			gr.assignments = next
			gr.snapshot = snapshotOf(gr, fmt.Sprint(gen))
			if err := cache.SetSnapshot(ctx, fleet.GroupKey(g), gr.snapshot); err != nil {
				return 0, err
			}
		}
		return len(affected), nil
	})
	if err != nil {
		log.Fatal(err)
	}

	srv := serverv3.NewServer(ctx, cache, serverv3.CallbackFuncs{})
	gs := grpc.NewServer(
		grpc.MaxConcurrentStreams(1<<20),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("go-control-plane peer: %d groups on %s", shape.Groups, *listen)
	log.Fatal(gs.Serve(ln))
}

// Each type keeps its own version, so an endpoint change re-sends only EDS.
func snapshotOf(gr *group, edsVersion string) *cachev3.Snapshot {
	s := &cachev3.Snapshot{}
	s.Resources[types.Cluster] = gr.clusters
	s.Resources[types.Listener] = gr.listeners
	s.Resources[types.Endpoint] = cachev3.NewResources(edsVersion, gr.assignments)
	return s
}

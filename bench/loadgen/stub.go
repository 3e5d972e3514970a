package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"strconv"
	"sync"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"vsxds.bench/internal/control"
	"vsxds.bench/internal/fleet"
)

// The stub is the fastest ADS server that still speaks the protocol the load generator
// expects: every response is encoded once per group, nonce included (the version doubles as
// the nonce: a stream gets at most one response per version and type), and the same bytes go
// to every stream; ACKs are read and dropped. What it measures is the load generator itself.

type rawFrame struct{ b []byte }

type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return v.(*rawFrame).b, nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	// grpc hands the codec a fresh copy.
	v.(*rawFrame).b = data
	return nil
}
func (rawCodec) Name() string { return "proto" }

type stubStream struct {
	delta bool
	out   chan []byte
}

type stubGroup struct {
	mu      sync.Mutex
	streams map[*stubStream]struct{}
	// Pre-encoded responses by type index (CDS, EDS, LDS), the current ones for new subscriptions.
	sotw, delta [3][]byte
	assignments []encoded
}

type stub struct {
	shape  fleet.Shape
	groups []*stubGroup
	index  map[string]int
}

func stubCmd(args []string) {
	fs := flag.NewFlagSet("stub", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:18000", "xDS address")
	controlAddr := fs.String("control", "127.0.0.1:18100", "control HTTP address")
	s := &stub{index: map[string]int{}}
	fs.IntVar(&s.shape.Groups, "groups", 100, "node groups")
	fs.IntVar(&s.shape.ClustersPerGroup, "clusters", 10, "clusters per group")
	fs.IntVar(&s.shape.EndpointsPerCluster, "endpoints", 5, "endpoints per cluster")
	fs.Parse(args)

	for g := 0; g < s.shape.Groups; g++ {
		gr := &stubGroup{streams: map[*stubStream]struct{}{}}
		var cs, es, ls []proto.Message
		for k := 0; k < s.shape.ClustersPerGroup; k++ {
			cs = append(cs, fleet.Cluster(g, k))
			es = append(es, s.shape.Assignment(g, k, 0))
			ls = append(ls, fleet.Listener(g, k))
		}
		for i, set := range [][]proto.Message{cs, es, ls} {
			typeURL := []string{fleet.ClusterType, fleet.EndpointType, fleet.ListenerType}[i]
			enc := encodeAll(set)
			gr.sotw[i] = sotwBody(typeURL, "0", enc)
			gr.delta[i] = deltaBody(typeURL, "0", enc)
			if i == 1 {
				gr.assignments = enc
			}
		}
		s.groups = append(s.groups, gr)
		s.index[fleet.GroupKey(g)] = g
	}
	var mu sync.Mutex
	if err := control.Serve(*controlAddr, func(scope string, gen int) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		n := 1
		switch scope {
		case "noop":
			return 0, nil
		case "all":
			n = s.shape.Groups
		}
		for g := 0; g < n; g++ {
			gr := s.groups[g]
			es := append([]encoded(nil), gr.assignments...)
			es[0] = encodeAll([]proto.Message{s.shape.Assignment(g, 0, gen)})[0]
			version := strconv.Itoa(gen)
			full := sotwBody(fleet.EndpointType, version, es)
			changed := deltaBody(fleet.EndpointType, version, es[:1])
			gr.mu.Lock()
			gr.sotw[1] = full
			gr.delta[1] = deltaBody(fleet.EndpointType, version, es)
			for st := range gr.streams {
				if st.delta {
					st.out <- changed
				} else {
					st.out <- full
				}
			}
			gr.mu.Unlock()
		}
		return n, nil
	}); err != nil {
		log.Fatal(err)
	}

	gs := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.MaxConcurrentStreams(1<<20))
	desc := grpc.ServiceDesc{
		ServiceName: "envoy.service.discovery.v3.AggregatedDiscoveryService",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{
			{StreamName: "StreamAggregatedResources", ServerStreams: true, ClientStreams: true, Handler: func(_ any, st grpc.ServerStream) error { return s.serve(st, false) }},
			{StreamName: "DeltaAggregatedResources", ServerStreams: true, ClientStreams: true, Handler: func(_ any, st grpc.ServerStream) error { return s.serve(st, true) }},
		},
	}
	gs.RegisterService(&desc, nil)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("stub: %d groups on %s", s.shape.Groups, *listen)
	log.Fatal(gs.Serve(ln))
}

func (s *stub) serve(st grpc.ServerStream, delta bool) error {
	ss := &stubStream{delta: delta, out: make(chan []byte, 64)}
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case b := <-ss.out:
				if st.SendMsg(&rawFrame{b}) != nil {
					return
				}
			case <-done:
				return
			}
		}
	}()
	var gr *stubGroup
	defer func() {
		if gr != nil {
			gr.mu.Lock()
			delete(gr.streams, ss)
			gr.mu.Unlock()
		}
	}()
	for {
		f := &rawFrame{}
		if err := st.RecvMsg(f); err != nil {
			return nil
		}
		var typeURL, nonce string
		var nodeGroup string
		if delta {
			req := &discovery.DeltaDiscoveryRequest{}
			if err := proto.Unmarshal(f.b, req); err != nil {
				return err
			}
			typeURL, nonce, nodeGroup = req.TypeUrl, req.ResponseNonce, groupOf(req.Node)
		} else {
			req := &discovery.DiscoveryRequest{}
			if err := proto.Unmarshal(f.b, req); err != nil {
				return err
			}
			typeURL, nonce, nodeGroup = req.TypeUrl, req.ResponseNonce, groupOf(req.Node)
		}
		if gr == nil {
			g, ok := s.index[nodeGroup]
			if !ok {
				return fmt.Errorf("unknown node group %q", nodeGroup)
			}
			gr = s.groups[g]
			gr.mu.Lock()
			gr.streams[ss] = struct{}{}
			gr.mu.Unlock()
		}
		if nonce != "" {
			continue
		}
		gr.mu.Lock()
		body := gr.sotw[typeIndex(typeURL)]
		if delta {
			body = gr.delta[typeIndex(typeURL)]
		}
		gr.mu.Unlock()
		ss.out <- body
	}
}

func groupOf(n *core.Node) string {
	if n == nil {
		return ""
	}
	return fleet.GroupKeyOfNode(n)
}

// Bodies are assembled from each resource's Any bytes, so a change marshals only the
// resource that changed.
func anyBytes(m proto.Message) []byte {
	b, err := proto.Marshal(mustAny(m))
	if err != nil {
		panic(err)
	}
	return b
}

func resourceName(m proto.Message) string {
	if cla, ok := m.(*endpoint.ClusterLoadAssignment); ok {
		return cla.ClusterName
	}
	return m.(interface{ GetName() string }).GetName()
}

type encoded struct {
	name string
	any  []byte
}

func encodeAll(set []proto.Message) []encoded {
	out := make([]encoded, len(set))
	for i, m := range set {
		out[i] = encoded{resourceName(m), anyBytes(m)}
	}
	return out
}

func sotwBody(typeURL, version string, set []encoded) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, version)
	for _, r := range set {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, r.any)
	}
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendString(b, typeURL)
	// nonce: field 5 in both response messages.
	b = protowire.AppendTag(b, 5, protowire.BytesType)
	return protowire.AppendString(b, version)
}

func deltaBody(typeURL, version string, set []encoded) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, version)
	for _, r := range set {
		var res []byte
		res = protowire.AppendTag(res, 3, protowire.BytesType)
		res = protowire.AppendString(res, r.name)
		res = protowire.AppendTag(res, 1, protowire.BytesType)
		res = protowire.AppendString(res, version)
		res = protowire.AppendTag(res, 2, protowire.BytesType)
		res = protowire.AppendBytes(res, r.any)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, res)
	}
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendString(b, typeURL)
	// nonce: field 5 in both response messages.
	b = protowire.AppendTag(b, 5, protowire.BytesType)
	return protowire.AppendString(b, version)
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

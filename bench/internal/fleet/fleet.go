// Package fleet describes the simulated Envoy fleet of the benchmark: node groups, their
// resources, and the endpoint changes the scenarios make. bench/fleet.ts builds the same
// resources for vsxds; the two must stay in step (same names, same fields, same values) so
// that every server is measured on the same bytes.
package fleet

import (
	"fmt"

	xdscore "github.com/cncf/xds/go/xds/core/v3"
	xdsmatcher "github.com/cncf/xds/go/xds/type/matcher/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	udpproxy "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/udp/udp_proxy/v3"
	envoytype "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const (
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

	Namespace = "bench"
)

// Shape is the size of the fleet's configuration.
type Shape struct {
	Groups              int
	ClustersPerGroup    int // one listener per cluster
	EndpointsPerCluster int
}

func GroupName(g int) string { return fmt.Sprintf("g%03d", g) }

// GroupKey is what vsxds calls the group (node-identity.ts), used by the peer's NodeHash too.
func GroupKey(g int) string { return fmt.Sprintf("%s/app=ingress,group=%s", Namespace, GroupName(g)) }

func ListenerName(g, k int) string { return fmt.Sprintf("%s-l%05d", GroupName(g), k) }
func ClusterName(g, k int) string  { return fmt.Sprintf("%s-c%05d", GroupName(g), k) }

// ClusterNames are what a client of group g subscribes to over EDS.
func (s Shape) ClusterNames(g int) []string {
	out := make([]string, s.ClustersPerGroup)
	for k := range out {
		out[k] = ClusterName(g, k)
	}
	return out
}

// EndpointAddress of endpoint e of cluster k in group g, before any change.
func (s Shape) EndpointAddress(g, k, e int) string {
	n := g*s.ClustersPerGroup + k
	return fmt.Sprintf("10.%d.%d.%d", (n>>8)&255, n&255, 10+e)
}

// ChangedAddress replaces endpoint 0 of cluster 0 in every affected group at change `gen`.
func ChangedAddress(gen int) string {
	return fmt.Sprintf("172.16.%d.%d", (gen>>8)&255, gen&255)
}

// Marker is how a client recognizes the change in a response: the address as a protobuf
// string (length prefix included, so 172.16.0.1 does not match inside 172.16.0.10).
func Marker(gen int) []byte {
	a := ChangedAddress(gen)
	return append([]byte{byte(len(a))}, a...)
}

// Node is what a client of group g sends as its Envoy node.
func Node(g, client int) *core.Node {
	labels, _ := structpb.NewStruct(map[string]any{"app": "ingress", "group": GroupName(g)})
	return &core.Node{
		Id:      fmt.Sprintf("%s/%s-proxy-%d", Namespace, GroupName(g), client),
		Cluster: "bench",
		Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"namespace": structpb.NewStringValue(Namespace),
			"labels":    structpb.NewStructValue(labels),
		}},
	}
}

// GroupKeyOfNode reads a node's group the way vsxds does: metadata namespace + sorted labels.
func GroupKeyOfNode(n *core.Node) string {
	md := n.GetMetadata().GetFields()
	ns := md["namespace"].GetStringValue()
	labels := md["labels"].GetStructValue().GetFields()
	// The bench only uses app and group; sorted by key.
	return fmt.Sprintf("%s/app=%s,group=%s", ns, labels["app"].GetStringValue(), labels["group"].GetStringValue())
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

func Listener(g, k int) *listener.Listener {
	name := ListenerName(g, k)
	route := mustAny(&udpproxy.Route{Cluster: ClusterName(g, k)})
	cfg := mustAny(&udpproxy.UdpProxyConfig{
		StatPrefix: name,
		RouteSpecifier: &udpproxy.UdpProxyConfig_Matcher{Matcher: &xdsmatcher.Matcher{
			OnNoMatch: &xdsmatcher.Matcher_OnMatch{OnMatch: &xdsmatcher.Matcher_OnMatch_Action{
				Action: &xdscore.TypedExtensionConfig{Name: "route", TypedConfig: route},
			}},
		}},
		HashPolicies: []*udpproxy.UdpProxyConfig_HashPolicy{{PolicySpecifier: &udpproxy.UdpProxyConfig_HashPolicy_Key{Key: "callid"}}},
	})
	return &listener.Listener{
		Name: name,
		Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
			Protocol: core.SocketAddress_UDP, Address: "0.0.0.0", PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(10000 + k)},
		}}},
		ListenerFilters: []*listener.ListenerFilter{{
			Name:       "envoy.filters.udp_listener.udp_proxy",
			ConfigType: &listener.ListenerFilter_TypedConfig{TypedConfig: cfg},
		}},
	}
}

func Cluster(g, k int) *cluster.Cluster {
	second := durationpb.New(1e9)
	return &cluster.Cluster{
		Name:                 ClusterName(g, k),
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
		EdsClusterConfig: &cluster.Cluster_EdsClusterConfig{EdsConfig: &core.ConfigSource{
			ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
			ResourceApiVersion:    core.ApiVersion_V3,
		}},
		ConnectTimeout: second,
		LbPolicy:       cluster.Cluster_MAGLEV,
		CommonLbConfig: &cluster.Cluster_CommonLbConfig{HealthyPanicThreshold: &envoytype.Percent{Value: 0}},
		HealthChecks: []*core.HealthCheck{{
			Timeout:            second,
			Interval:           second,
			NoTrafficInterval:  second,
			UnhealthyThreshold: wrapperspb.UInt32(1),
			HealthyThreshold:   wrapperspb.UInt32(1),
			HealthChecker:      &core.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &core.HealthCheck_TcpHealthCheck{}},
		}},
	}
}

// Assignment of cluster k in group g; changedGen > 0 replaces endpoint 0 with ChangedAddress.
func (s Shape) Assignment(g, k, changedGen int) *endpoint.ClusterLoadAssignment {
	lbs := make([]*endpoint.LbEndpoint, s.EndpointsPerCluster)
	for e := range lbs {
		addr := s.EndpointAddress(g, k, e)
		if e == 0 && changedGen > 0 {
			addr = ChangedAddress(changedGen)
		}
		lbs[e] = &endpoint.LbEndpoint{
			HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
				Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
					Address: addr, PortSpecifier: &core.SocketAddress_PortValue{PortValue: 2001},
				}}},
				HealthCheckConfig: &endpoint.Endpoint_HealthCheckConfig{PortValue: 1233},
			}},
			Metadata: &core.Metadata{FilterMetadata: map[string]*structpb.Struct{
				"envoy.lb": {Fields: map[string]*structpb.Value{"hash_key": structpb.NewStringValue(addr)}},
			}},
		}
	}
	return &endpoint.ClusterLoadAssignment{
		ClusterName: ClusterName(g, k),
		Endpoints:   []*endpoint.LocalityLbEndpoints{{Locality: &core.Locality{}, LbEndpoints: lbs}},
	}
}

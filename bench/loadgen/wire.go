package main

import (
	"bytes"
	"time"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

const adsService = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"

// response is what a client needs of a (Delta)DiscoveryResponse. Decoding only these fields,
// inside the codec and without copying the message, keeps the load generator's cost per
// response far below any server's.
type response struct {
	typeURL, version, nonce string
	size                    int
	at                      time.Time
	// The change being measured when the response arrived, and whether the response carries it.
	epoch  *epoch
	marked bool
}

type wireCodec struct {
	lg    *loadgen
	group int
}

func (c *wireCodec) Name() string { return "proto" }

func (c *wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.(*rawFrame).b)}, nil
}

func (c *wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r := v.(*response)
	r.at = time.Now()
	var b []byte
	if len(data) == 1 {
		b = data[0].ReadOnlyData()
	} else {
		b = data.Materialize()
	}
	r.size = len(b)
	// DiscoveryResponse: 1 version_info, 4 type_url, 5 nonce.
	// DeltaDiscoveryResponse: 1 system_version_info, 4 type_url, 5 nonce.
	if err := fields(b, func(num protowire.Number, val []byte) {
		switch num {
		case 1:
			r.version = string(val)
		case 4:
			r.typeURL = string(val)
		case 5:
			r.nonce = string(val)
		}
	}); err != nil {
		return err
	}
	if e := c.lg.current.Load(); e != nil {
		r.epoch = e
		r.marked = e.affected[c.group] && bytes.Contains(b, e.marker)
	}
	return nil
}

// fields calls fn for every length-delimited field of a protobuf message, in order.
func fields(b []byte, fn func(num protowire.Number, val []byte)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		val, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		fn(num, val)
	}
	return nil
}

// request encodes a DiscoveryRequest (SotW) or DeltaDiscoveryRequest. names are the EDS
// resource names (SotW) or the names to subscribe to (delta).
func request(delta bool, node []byte, typeURL, version, nonce string, names []string) []byte {
	var b []byte
	if delta {
		// node 1, type_url 2, resource_names_subscribe 3, response_nonce 6.
		if node != nil {
			b = protowire.AppendTag(b, 1, protowire.BytesType)
			b = protowire.AppendBytes(b, node)
		}
		b = appendString(b, 2, typeURL)
		for _, n := range names {
			b = appendString(b, 3, n)
		}
		return appendString(b, 6, nonce)
	}
	// version_info 1, node 2, resource_names 3, type_url 4, response_nonce 5.
	b = appendString(b, 1, version)
	if node != nil {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, node)
	}
	for _, n := range names {
		b = appendString(b, 3, n)
	}
	b = appendString(b, 4, typeURL)
	return appendString(b, 5, nonce)
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

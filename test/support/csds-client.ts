import { credentials, makeGenericClientConstructor, Metadata, type ServiceError } from '@grpc/grpc-js';
import { messageType, TO_OBJECT } from '../../src/xds/protos.js';

const SERVICE = '/envoy.service.status.v3.ClientStatusDiscoveryService';
const encode = (name: string) => (value: Record<string, unknown>) => Buffer.from(messageType(name).encode(messageType(name).fromObject(value)).finish());
const decode = (name: string) => (bytes: Buffer) => messageType(name).toObject(messageType(name).decode(bytes), { ...TO_OBJECT, arrays: true });
const REQ = 'envoy.service.status.v3.ClientStatusRequest';
const RES = 'envoy.service.status.v3.ClientStatusResponse';

/** A plain grpc-js client of the CSDS service built from the vendored csds.proto, independent of vsxds's server code. */
const Client = makeGenericClientConstructor(
  {
    FetchClientStatus: { path: `${SERVICE}/FetchClientStatus`, requestStream: false, responseStream: false, requestSerialize: encode(REQ), requestDeserialize: decode(REQ), responseSerialize: encode(RES), responseDeserialize: decode(RES) },
    StreamClientStatus: { path: `${SERVICE}/StreamClientStatus`, requestStream: true, responseStream: true, requestSerialize: encode(REQ), requestDeserialize: decode(REQ), responseSerialize: encode(RES), responseDeserialize: decode(RES) },
  },
  'ClientStatusDiscoveryService',
);

export interface CsdsAnswer {
  readonly replica: string;
  readonly config: Array<Record<string, any>>;
}

/** FetchClientStatus (unary); `stream: true` asks once over StreamClientStatus instead. */
export function fetchCsds(address: string, request: Record<string, unknown> = {}, opts: { stream?: boolean } = {}): Promise<CsdsAnswer> {
  const client = new Client(address, credentials.createInsecure());
  return new Promise((resolve, reject) => {
    let replica = '';
    const onMetadata = (md: Metadata) => (replica = String(md.get('vsxds-replica')[0] ?? ''));
    const done = (err: ServiceError | null, res?: Record<string, any>) => {
      client.close();
      if (err) reject(Object.assign(new Error(err.details), { code: err.code }));
      else resolve({ replica, config: (res?.['config'] ?? []) as Array<Record<string, any>> });
    };
    if (opts.stream) {
      const call = (client as any).StreamClientStatus();
      call.on('metadata', onMetadata);
      call.on('data', (res: Record<string, any>) => {
        call.cancel();
        done(null, res);
      });
      call.on('error', (err: ServiceError) => {
        if (err.code !== 1) done(err);
      });
      call.write(request);
    } else {
      const call = (client as any).FetchClientStatus(request, done);
      call.on('metadata', onMetadata);
    }
  });
}

/** The GenericXdsConfigs of one proxy, by short type and name: `CDS/name` → entry. */
export function entriesOf(config: Record<string, any> | undefined): Map<string, Record<string, any>> {
  const out = new Map<string, Record<string, any>>();
  for (const g of config?.['generic_xds_configs'] ?? []) {
    const type = String(g.type_url).split('.').pop();
    const short = type === 'Cluster' ? 'CDS' : type === 'Listener' ? 'LDS' : type === 'ClusterLoadAssignment' ? 'EDS' : type;
    out.set(`${short}/${g.name}`, g);
  }
  return out;
}

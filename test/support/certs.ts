import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface Issued {
  readonly certPath: string;
  readonly keyPath: string;
  readonly cert: Buffer;
  readonly key: Buffer;
}

/** A throw-away CA made with the openssl CLI, issuing server and client certificates for tests. */
export class TestCa {
  readonly dir = mkdtempSync(path.join(os.tmpdir(), 'vsxds-ca-'));
  readonly certPath = path.join(this.dir, 'ca.pem');
  private readonly keyPath = path.join(this.dir, 'ca.key');
  private serial = 1;

  constructor(name = 'vsxds test CA') {
    this.openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', this.keyPath]);
    this.openssl(['req', '-x509', '-new', '-key', this.keyPath, '-sha256', '-days', '2', '-subj', `/CN=${name}`, '-out', this.certPath]);
  }

  get cert(): Buffer {
    return readFileSync(this.certPath);
  }

  /** `san` entries as openssl writes them: `IP:127.0.0.1`, `DNS:localhost`, `URI:spiffe://...`. */
  issue(name: string, opts: { cn?: string; san?: string[]; client?: boolean }): Issued {
    const keyPath = path.join(this.dir, `${name}.key`);
    const csrPath = path.join(this.dir, `${name}.csr`);
    const certPath = path.join(this.dir, `${name}.pem`);
    const extPath = path.join(this.dir, `${name}.ext`);
    this.openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', keyPath]);
    // PKCS#8 keys suit every TLS stack (grpc-js, Envoy's BoringSSL).
    this.openssl(['pkcs8', '-topk8', '-nocrypt', '-in', keyPath, '-out', `${keyPath}.p8`]);
    this.openssl(['req', '-new', '-key', keyPath, '-subj', `/CN=${opts.cn ?? name}`, '-out', csrPath]);
    const ext = [`extendedKeyUsage=${opts.client ? 'clientAuth' : 'serverAuth'}`, 'basicConstraints=CA:FALSE'];
    if (opts.san?.length) ext.push(`subjectAltName=${opts.san.join(',')}`);
    writeFileSync(extPath, `${ext.join('\n')}\n`);
    this.openssl(['x509', '-req', '-in', csrPath, '-CA', this.certPath, '-CAkey', this.keyPath, '-set_serial', String(this.serial++), '-days', '2', '-sha256', '-extfile', extPath, '-out', certPath]);
    return { certPath, keyPath: `${keyPath}.p8`, cert: readFileSync(certPath), key: readFileSync(`${keyPath}.p8`) };
  }

  private openssl(args: string[]): void {
    execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  }
}

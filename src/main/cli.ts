#!/usr/bin/env node
import { parseCommandLine, usage, UsageError } from './config.js';
import { proxyStatus } from './proxy-status.js';
import { render } from './render.js';
import { serve } from './serve.js';

async function main(argv: string[]): Promise<number> {
  // proxy-status has flags of its own (a repeatable --server), not the server's.
  if (argv[0] === 'proxy-status') return proxyStatus(argv.slice(1), process.stdout, process.stderr);
  const { command, settings, help } = parseCommandLine(argv, process.env);
  if (help) {
    process.stdout.write(`${usage()}\n`);
    return 0;
  }
  if (command === 'render') return render(settings, process.stdout, process.stderr);
  if (command !== 'serve') throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  const running = await serve(settings);
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => void running.shutdown(signal).then(resolve);
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`vsxds: ${err.message}\n\n${usage()}\n`);
      process.exit(2);
    }
    process.stderr.write(`vsxds: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);

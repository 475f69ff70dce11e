// One `qemu-img info` per file per inspection: images of one chain share their lower layers, and
// each image's chain is read down to its base, so without this a chain of n layers would cost
// n(n+1)/2 processes. Only read-only `info` commands are remembered, for the length of one
// inspection; concurrent identical calls share one process.
import type { Argv } from '../qemu/commands.js';
import type { CommandResult, CommandRunner, RunOptions } from '../qemu/runner.js';

/** A runner that runs each distinct `qemu-img info` once and answers repeats from memory. */
export function memoizeInfo(runner: CommandRunner): CommandRunner {
  const results = new Map<string, Promise<CommandResult>>();
  return {
    run(argv: Argv, options?: RunOptions): Promise<CommandResult> {
      const key = argv.join('\0');
      const known = argv[0] === 'qemu-img' && argv[1] === 'info' ? results.get(key) : undefined;
      if (known) return known;
      const result = runner.run(argv, options);
      if (argv[0] === 'qemu-img' && argv[1] === 'info') results.set(key, result);
      return result;
    },
  };
}

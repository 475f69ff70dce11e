// The `chainform` command itself, run as soon as it is loaded: esbuild bundles this module and
// everything it imports into dist/cli-bundle.cjs, which the executable (src/cli.ts) loads. Bugs
// print a short report instead of a bare stack trace.
import { createProgram } from './program.js';

const program = createProgram({
  stdout: process.stdout,
  stderr: process.stderr,
  stdin: process.stdin,
  cwd: process.cwd(),
});
// A reader that stops reading (`chainform plan m.yaml | head`) closes the pipe: the rest of the
// output is dropped, and the command still finishes what it is doing (an apply is never cut
// short by it, nor reported as an internal error).
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') process.exitCode = 1;
  });
}
let settled = false;
// Node would exit once nothing is left to wait for, even with the command unfinished (a promise
// nobody resolves): that is a bug, and must not look like success.
process.once('exit', () => {
  if (settled) return;
  process.stderr.write('chainform: internal error: the command ended before it finished\n');
  process.exitCode = 1;
});
program.run(process.argv.slice(2)).then(
  (exitCode) => {
    settled = true;
    process.exitCode = exitCode;
  },
  (e: unknown) => {
    settled = true;
    process.stderr.write(
      `chainform: internal error: ${(e as Error).message}\nThis is a bug in chainform; please report it with the command you ran. Nothing further was changed.\n`,
    );
    process.exitCode = 1;
  },
);

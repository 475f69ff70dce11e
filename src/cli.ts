#!/usr/bin/env node
// The `chainform` executable. Bugs print a short report instead of a bare stack trace.
import { createProgram } from './cli/program.js';

const program = createProgram({
  stdout: process.stdout,
  stderr: process.stderr,
  stdin: process.stdin,
  cwd: process.cwd(),
});
try {
  process.exitCode = await program.run(process.argv.slice(2));
} catch (e) {
  process.stderr.write(
    `chainform: internal error: ${(e as Error).message}\nThis is a bug in chainform; please report it with the command you ran. Nothing further was changed.\n`,
  );
  process.exitCode = 1;
}

// I/O accounting of the qemu processes a benchmark runs: qemu-img, qemu-nbd and qemu-io reached through a
// PATH shim (io-shim.py) that logs each process's /proc/PID/io (rchar/wchar) when it exits.
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { execa } from 'execa';
import { quote } from './shell.mjs';

const SHIM = new URL('./io-shim.py', import.meta.url).pathname;
const PROGRAMS = ['qemu-img', 'qemu-nbd', 'qemu-io'];
/** How long to wait for a `qemu-nbd --fork` keeper to log its daemon after the daemon was stopped. */
const KEEPER_TIMEOUT_MS = 10_000;

/** python3's real interpreter (not a pyenv shim, which costs ~100 ms per process), or undefined. */
async function findPython() {
  const found = await execa('python3', ['-c', 'import os, sys; print(os.path.realpath(sys.executable))'], {
    reject: false,
  });
  return found.exitCode === 0 ? found.stdout.trim() : undefined;
}

/** `qemu-img convert`, `qemu-img rebase`, ... or `qemu-nbd`: the key of the per-command breakdown. */
function commandKey(argv) {
  return argv[0] === 'qemu-img' ? `qemu-img ${argv[1]}` : argv[0];
}

/** Sums a shim log; undefined while a `--fork` keeper has not logged its daemon yet. */
function summarise(entries) {
  const forking = entries.filter((e) => e.role === 'main' && e.argv.includes('--fork')).length;
  const kept = entries.filter((e) => e.role === 'keeper-done').length;
  if (kept < forking) return undefined;
  const totals = { rchar: 0, wchar: 0, processes: 0, byCommand: {} };
  for (const e of entries) {
    if (e.role !== 'main' && e.role !== 'descendant') continue;
    const key = commandKey(e.argv);
    totals.byCommand[key] ??= { count: 0, rchar: 0, wchar: 0 };
    const slot = totals.byCommand[key];
    if (e.role === 'main') {
      totals.processes++;
      slot.count++;
    }
    totals.rchar += e.rchar ?? 0;
    totals.wchar += e.wchar ?? 0;
    slot.rchar += e.rchar ?? 0;
    slot.wchar += e.wchar ?? 0;
  }
  return totals;
}

/**
 * Sets up the shim wrappers in `dir`. `session()` gives a fresh log: its `env` routes qemu-img,
 * qemu-nbd and qemu-io through the shim, `totals()` sums what the processes run with that env read and wrote
 * ({rchar, wchar, processes, byCommand}). Without python3, `available` is false, `env` is empty
 * and `totals()` is null: the benchmarks then run the real programs and report no bytes read.
 */
export async function createIoAccounting(dir) {
  const python = await findPython();
  if (!python) {
    return {
      available: false,
      note: 'python3 not found: qemu bytes read/written are not measured (GNU time block output only)',
      session: () => ({ env: {}, totals: async () => null }),
    };
  }
  await mkdir(dir, { recursive: true });
  for (const program of PROGRAMS) {
    const wrapper = join(dir, program);
    await writeFile(wrapper, `#!/bin/sh\nexec ${quote(python)} -S -E ${quote(SHIM)} ${program} "$@"\n`);
    await chmod(wrapper, 0o755);
  }
  let sessions = 0;
  return {
    available: true,
    python,
    session() {
      const log = join(dir, `io-${++sessions}.jsonl`);
      return {
        log,
        env: { PATH: `${dir}:${process.env.PATH}`, BENCH_IO_LOG: log },
        async totals() {
          const deadline = Date.now() + KEEPER_TIMEOUT_MS;
          while (true) {
            const text = await readFile(log, 'utf8').catch(() => '');
            const entries = text
              .split('\n')
              .filter(Boolean)
              .map((l) => JSON.parse(l));
            const totals = summarise(entries);
            if (totals) return totals;
            if (Date.now() > deadline) throw new Error(`io shim: a qemu-nbd --fork daemon never logged (${log})`);
            await delay(50);
          }
        },
      };
    },
  };
}

const MiB = 1024 * 1024;
const KNOWN = 64 * MiB;
/** Within a MiB above the known figure: process start-up reads (libraries, /proc, headers). */
const near = (bytes) => bytes >= KNOWN && bytes <= KNOWN + MiB;

/**
 * Checks the shim on known reads before any figure relies on it. A plain `qemu-img convert` of a
 * 64 MiB random file must log rchar and wchar of 64 MiB (throws otherwise). Then the file is
 * exported by `qemu-nbd --fork` (the daemonising path) and read back by `qemu-img convert` from
 * the socket: the daemon's rchar must be 64 MiB; the client's rchar says whether socket traffic
 * (recvmsg) counts. Returns the figures for the results file.
 */
export async function checkIoAccounting(io, dir) {
  if (!io.available) return { skipped: io.note };
  await mkdir(dir, { recursive: true });
  const [source, copy, fromNbd] = ['known.raw', 'copy.raw', 'from-nbd.raw'].map((f) => join(dir, f));
  await execa('head', ['-c', String(KNOWN), '/dev/urandom'], { stdout: { file: source } });

  const plain = io.session();
  await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', source, copy], { env: plain.env });
  const convert = await plain.totals();
  if (!near(convert.rchar) || !near(convert.wchar)) {
    throw new Error(`io shim check: convert of 64 MiB logged rchar ${convert.rchar}, wchar ${convert.wchar}`);
  }

  const nbd = io.session();
  const socket = join(dir, 'nbd.sock');
  const pidFile = join(dir, 'nbd.pid');
  await execa('qemu-nbd', ['-t', '-r', '-f', 'raw', '-k', socket, '--fork', '--pid-file', pidFile, source], {
    env: nbd.env,
  });
  try {
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', `nbd+unix:///?socket=${socket}`, fromNbd], {
      env: nbd.env,
    });
  } finally {
    process.kill(Number(await readFile(pidFile, 'utf8')), 'SIGTERM');
  }
  const served = await nbd.totals();
  const server = served.byCommand['qemu-nbd'];
  const client = served.byCommand['qemu-img convert'];
  if (!server || !client || !near(server.rchar)) {
    throw new Error(`io shim check: the qemu-nbd --fork daemon logged ${JSON.stringify(served.byCommand)}`);
  }
  return {
    knownBytes: KNOWN,
    convert: { rchar: convert.rchar, wchar: convert.wchar },
    nbdForkExport: { serverRchar: server.rchar, serverWchar: server.wchar },
    nbdClientConvert: { rchar: client.rchar, wchar: client.wchar },
    socketTrafficCounted: client.rchar >= KNOWN / 2,
  };
}

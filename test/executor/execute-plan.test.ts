import { describe, expect, it } from 'vitest';
import type { StepEffects } from '../../src/executor/effects.js';
import type { ExecutionEvent } from '../../src/executor/events.js';
import { executePlan } from '../../src/executor/execute-plan.js';
import type { LedgerIntent, Plan, Step } from '../../src/planner/plan-types.js';
import type { Argv } from '../../src/qemu/commands.js';
import type { CommandResult, RunOptions } from '../../src/qemu/runner.js';
import type { StepJournal } from '../../src/state/journal.js';

function step(id: string, dependsOn: string[] = [], temporary = true): Step {
  return {
    id,
    kind: 'convert',
    image: id,
    path: `/out/${id}`,
    reason: 'test',
    dependsOn,
    reads: [],
    writes: [`/out/${id}`],
    ...(temporary ? { temporaryPath: `/out/.${id}.tmp` } : {}),
    commands: [{ argv: ['qemu-img', 'convert', id], purpose: 'test' }],
    expectedWriteBytes: 0,
    writeBytesIsUpperBound: false,
  };
}

function planOf(steps: Step[]): Plan {
  return { formatVersion: 1, manifest: '/m.yaml', images: [], steps, space: [], retire: [], warnings: [] };
}

/** Fake effects: commands finish when the test releases them; every effect is logged. */
class FakeEffects implements StepEffects {
  readonly log: string[] = [];
  private readonly releases = new Map<string, (r: CommandResult) => void>();
  running = 0;
  maxRunning = 0;

  constructor(private readonly autoResult?: (id: string) => CommandResult) {}

  run(argv: Argv, options?: RunOptions): Promise<CommandResult> {
    const id = argv[2] as string;
    this.log.push(`run ${id}`);
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    options?.onSpawn?.(4000 + this.log.length);
    options?.onOutput?.('    (50.00/100%)\r');
    const done = (r: CommandResult) => {
      this.running--;
      return r;
    };
    if (this.autoResult) {
      const result = this.autoResult(id);
      return new Promise((resolve) => setTimeout(() => resolve(done(result)), 5));
    }
    return new Promise((resolve) => this.releases.set(id, (r) => resolve(done(r))));
  }
  release(id: string, exitCode = 0): void {
    this.releases.get(id)?.({ exitCode, stdout: '', stderr: exitCode ? 'qemu-img: boom\n' : '' });
  }
  async prepareTemporary(p: string) {
    this.log.push(`prepare ${p}`);
  }
  async commitTemporary(t: string, p: string) {
    this.log.push(`commit ${t} -> ${p}`);
  }
  async discardTemporary(p: string) {
    this.log.push(`discard ${p}`);
  }
  async flush(p: string) {
    this.log.push(`flush ${p}`);
  }
  /** When set, writeback starts and stops are logged too. */
  logWriteback = false;
  /** What the next writeback's stop() fails with. */
  writebackError: Error | undefined;
  startWriteback(paths: readonly string[]) {
    if (this.logWriteback) this.log.push(`writeback ${paths.join(' ')}`);
    return {
      stop: async () => {
        if (this.logWriteback) this.log.push('writeback stopped');
        if (this.writebackError) throw this.writebackError;
        return 1;
      },
    };
  }
  async record(p: string, _intent: LedgerIntent, located: Readonly<Record<string, string>> = {}) {
    this.log.push(located[p] ? `record ${p} (now ${located[p]})` : `record ${p}`);
  }
  async openRuntime() {
    this.log.push('open-runtime');
    return '/run/x';
  }
  async closeRuntime(dir: string) {
    this.log.push(`close-runtime ${dir}`);
  }
  async startHelper(argv: Argv, socket: string) {
    this.log.push(`helper ${argv.join(' ')} @ ${socket}`);
    return { stop: async () => void this.log.push(`stop ${argv.at(-1)}`) };
  }
  async diskUsage() {
    return undefined;
  }
  async markFinished(p: string) {
    this.log.push(`finished ${p}`);
  }
  async markInProgress(p: string) {
    this.log.push(`in-progress ${p}`);
  }
  async refreshChain(p: string, chain: string) {
    this.log.push(`refresh ${p} ${chain}`);
  }
  /** Files the test says changed since planning, with how. */
  readonly changed = new Map<string, string>();
  async changedSincePlanned(p: string) {
    this.log.push(`check ${p}`);
    return this.changed.get(p);
  }
}

const ok = () => ({ exitCode: 0, stdout: '', stderr: '' });
const tick = () => new Promise((r) => setTimeout(r, 10));

describe('executePlan', () => {
  it('runs independent steps in parallel up to --jobs, dependents after', async () => {
    const effects = new FakeEffects(ok);
    const summary = await executePlan(planOf([step('a'), step('b'), step('c'), step('d', ['a', 'b'])]), {
      effects,
      jobs: 2,
    });
    expect(summary.ok).toBe(true);
    expect(summary.done.slice(-1)).toEqual(['d']);
    expect(new Set(summary.done)).toEqual(new Set(['a', 'b', 'c', 'd']));
    expect(effects.maxRunning).toBe(2);
  });

  it('runs one step at a time with jobs 1', async () => {
    const effects = new FakeEffects(ok);
    await executePlan(planOf([step('a'), step('b'), step('c')]), { effects, jobs: 1 });
    expect(effects.maxRunning).toBe(1);
  });

  /** Step b: commands b1 and b2, the second only once `a` is done (a linearised link's shape). */
  const finishingAfterA = (): Step => ({
    ...step('b'),
    finishAfter: { steps: ['a'], beforeCommand: 1 },
    commands: [
      { argv: ['qemu-io', '-c', 'b1'], purpose: 'copies' },
      { argv: ['qemu-img', 'rebase', 'b2'], purpose: 'link' },
    ],
  });

  it('runs the first commands of a finishAfter step beside the step it needs, the rest after it', async () => {
    const effects = new FakeEffects();
    const run = executePlan(planOf([step('a'), finishingAfterA()]), { effects, jobs: 2 });
    await tick();
    effects.release('b1');
    await tick();
    // b1 ran and finished while a still runs; b2 waits for a.
    expect([...effects.log].sort()).toEqual(['prepare /out/.a.tmp', 'prepare /out/.b.tmp', 'run a', 'run b1']);
    effects.release('a');
    await tick();
    effects.release('b2');
    const summary = await run;
    expect(summary.done).toEqual(['a', 'b']);
    expect(effects.log.indexOf('run b2')).toBeGreaterThan(effects.log.indexOf('commit /out/.a.tmp -> /out/a'));
    expect(effects.log.at(-1)).toBe('commit /out/.b.tmp -> /out/b');
  });

  it('starts a finishAfter step only after the step it needs with jobs 1', async () => {
    const effects = new FakeEffects(ok);
    const summary = await executePlan(planOf([step('a'), finishingAfterA()]), { effects, jobs: 1 });
    expect(summary.done).toEqual(['a', 'b']);
    expect(effects.maxRunning).toBe(1);
    expect(effects.log.indexOf('run b1')).toBeGreaterThan(effects.log.indexOf('commit /out/.a.tmp -> /out/a'));
  });

  it('stops a finishAfter step unfinished when the step it needs fails, leaving nothing behind', async () => {
    const effects = new FakeEffects();
    const run = executePlan(planOf([step('a'), finishingAfterA()]), { effects, jobs: 2 });
    await tick();
    effects.release('b1');
    await tick();
    effects.release('a', 1);
    const summary = await run;
    expect(summary.failed.map((f) => [f.stepId, f.message])).toEqual([
      ['a', 'qemu-img convert failed (exit 1): boom'],
      ['b', 'b: stopped unfinished: it needs a, which did not finish'],
    ]);
    expect(effects.log).not.toContain('run b2');
    expect(effects.log).toContain('discard /out/.b.tmp');
    expect(effects.log.filter((line) => line.startsWith('commit'))).toEqual([]);
  });

  it('writes to a temporary file, flushes it and commits it only after success', async () => {
    const effects = new FakeEffects(ok);
    await executePlan(planOf([step('a')]), { effects, jobs: 1 });
    expect(effects.log).toEqual(['prepare /out/.a.tmp', 'run a', 'flush /out/.a.tmp', 'commit /out/.a.tmp -> /out/a']);
  });

  it('writes the outputs back while the commands run and stops before the flush', async () => {
    const effects = new FakeEffects(ok);
    effects.logWriteback = true;
    const withDataFile: Step = {
      ...step('a'),
      extraTemporaries: [{ temporaryPath: '/out/.a.raw.tmp', path: '/out/a.raw' }],
    };
    await executePlan(planOf([withDataFile, step('b', ['a'], false)]), { effects, jobs: 1 });
    expect(effects.log).toEqual([
      'prepare /out/.a.tmp',
      'prepare /out/.a.raw.tmp',
      'writeback /out/.a.raw.tmp /out/.a.tmp',
      'run a',
      'writeback stopped',
      'flush /out/.a.raw.tmp',
      'flush /out/.a.tmp',
      'commit /out/.a.raw.tmp -> /out/a.raw',
      'commit /out/.a.tmp -> /out/a',
      'writeback /out/b',
      'run b',
      'writeback stopped',
      'flush /out/b',
    ]);
  });

  it('fails a step whose writeback hit a write error, and keeps a failed command its own message', async () => {
    const effects = new FakeEffects(ok);
    effects.writebackError = new Error('cannot write /out/.a.tmp back to disk: EIO: i/o error, fdatasync');
    const summary = await executePlan(planOf([step('a')]), { effects, jobs: 1 });
    expect(summary.failed).toEqual([
      { stepId: 'a', message: 'a: cannot write /out/.a.tmp back to disk: EIO: i/o error, fdatasync' },
    ]);
    expect(effects.log).toEqual(['prepare /out/.a.tmp', 'run a', 'discard /out/.a.tmp']);
    const failing = new FakeEffects(() => ({ exitCode: 1, stdout: '', stderr: 'qemu-img: No space left on device\n' }));
    failing.writebackError = new Error('cannot write /out/.a.tmp back to disk: ENOSPC');
    const failed = await executePlan(planOf([step('a')]), { effects: failing, jobs: 1 });
    expect(failed.failed[0]?.message).toContain('No space left on device');
  });

  it('records the ledger before the rename, then refreshes the outputs whose chain the step rewrote', async () => {
    const effects = new FakeEffects(ok);
    const recorded: Step = {
      ...step('a'),
      ledger: {
        imageId: 'a',
        format: 'qcow2',
        source: { path: '/in/a', format: 'raw' },
        sourceChain: [],
        backingChain: [],
      },
      refreshLedger: [{ output: '/out/web', chain: 'backingChain', files: ['/out/a'] }],
    };
    await executePlan(planOf([recorded]), { effects, jobs: 1 });
    expect(effects.log).toEqual([
      'prepare /out/.a.tmp',
      'run a',
      'flush /out/.a.tmp',
      'record /out/a (now /out/.a.tmp)',
      'commit /out/.a.tmp -> /out/a',
      'finished /out/a',
      'refresh /out/web backingChain',
    ]);
  });

  it('starts helpers in a private runtime folder and always stops them, also on failure', async () => {
    const withHelper: Step = {
      ...step('a'),
      helpers: [
        { argv: ['qemu-nbd', '--socket', '{runtime}/s.sock', 'img'], socket: '{runtime}/s.sock', purpose: 'export' },
      ],
      commands: [{ argv: ['qemu-img', 'create', 'a', 'nbd+unix:///?socket={runtime}/s.sock'], purpose: 'use it' }],
    };
    const good = new FakeEffects(ok);
    await executePlan(planOf([withHelper]), { effects: good, jobs: 1 });
    expect(good.log).toEqual([
      'prepare /out/.a.tmp',
      'open-runtime',
      'helper qemu-nbd --socket /run/x/s.sock img @ /run/x/s.sock',
      'run a',
      'flush /out/.a.tmp',
      'commit /out/.a.tmp -> /out/a',
      'stop img',
      'close-runtime /run/x',
    ]);
    const bad = new FakeEffects(() => ({ exitCode: 1, stdout: '', stderr: 'qemu-img: no\n' }));
    const summary = await executePlan(planOf([withHelper]), { effects: bad, jobs: 1 });
    expect(summary.failed).toHaveLength(1);
    expect(bad.log.slice(-3)).toEqual(['stop img', 'close-runtime /run/x', 'discard /out/.a.tmp']);
  });

  it('journals each step and the pid of each command before and after it runs', async () => {
    const effects = new FakeEffects(ok);
    const entries: string[] = [];
    const journal: StepJournal = {
      stepStarted: async (s) => void entries.push(`started ${s.id}`),
      commandStarted: async (s, c) => void entries.push(`command ${s.id} pid ${c.pid}: ${c.argv.join(' ')}`),
      commandEnded: async (s, pid) => void entries.push(`ended ${s.id} pid ${pid}`),
      stepEnded: async (s, good) => void entries.push(`${good ? 'done' : 'failed'} ${s.id}`),
    };
    await executePlan(planOf([step('a'), step('b', ['a'])]), { effects, jobs: 1, journal });
    expect(entries).toEqual([
      'started a',
      'command a pid 4002: qemu-img convert a',
      'ended a pid 4002',
      'done a',
      'started b',
      'command b pid 4006: qemu-img convert b',
      'ended b pid 4006',
      'done b',
    ]);
    const failing = new FakeEffects(() => ({ exitCode: 1, stdout: '', stderr: 'qemu-img: no\n' }));
    entries.length = 0;
    await executePlan(planOf([step('a')]), { effects: failing, jobs: 1, journal });
    expect(entries.at(-1)).toBe('failed a');
  });

  it('fails the step when its journal entry cannot be written, and cleans up', async () => {
    const effects = new FakeEffects(ok);
    const journal: StepJournal = {
      stepStarted: async () => undefined,
      commandStarted: async () => {
        throw new Error('ENOSPC');
      },
      commandEnded: async () => undefined,
      stepEnded: async () => undefined,
    };
    const summary = await executePlan(planOf([step('a')]), { effects, jobs: 1, journal });
    expect(summary.failed.map((f) => f.message)).toEqual(['a: ENOSPC']);
    expect(effects.log).toEqual(['prepare /out/.a.tmp', 'run a', 'discard /out/.a.tmp']);
  });

  it('marks a recorded output in progress before changing it in place', async () => {
    const effects = new FakeEffects(ok);
    const inPlace: Step = {
      ...step('a', [], false),
      ledger: {
        imageId: 'a',
        format: 'qcow2',
        source: { path: '/in/a', format: 'raw' },
        sourceChain: [],
        backingChain: [],
      },
    };
    await executePlan(planOf([inPlace]), { effects, jobs: 1 });
    expect(effects.log).toEqual(['in-progress /out/a', 'run a', 'flush /out/a', 'record /out/a']);
  });

  it('flushes an in-place step instead of renaming', async () => {
    const effects = new FakeEffects(ok);
    await executePlan(planOf([step('a', [], false)]), { effects, jobs: 1 });
    expect(effects.log).toEqual(['run a', 'flush /out/a']);
  });

  it('refuses to start a step whose planned-from file changed, running none of its commands', async () => {
    const effects = new FakeEffects(ok);
    const fingerprint = { dev: '1', ino: '2', size: '3', mtimeNs: '4' };
    const planned = { ...step('a'), plannedFrom: [{ path: '/in/src.qcow2', fingerprint }] };
    const unchanged = await executePlan(planOf([planned]), { effects, jobs: 1 });
    expect(unchanged.ok).toBe(true);
    expect(effects.log.slice(0, 2)).toEqual(['check /in/src.qcow2', 'prepare /out/.a.tmp']);

    const later = new FakeEffects(ok);
    later.changed.set('/in/src.qcow2', 'it was modified since the plan was made');
    const summary = await executePlan(planOf([planned]), { effects: later, jobs: 1 });
    expect(summary.ok).toBe(false);
    expect(summary.failed[0]?.message).toContain('/in/src.qcow2 cannot be used as planned: it was modified');
    expect(later.log.filter((l) => l.startsWith('run') || l.startsWith('commit') || l.startsWith('record'))).toEqual(
      [],
    );
  });

  it('fails a planned-from step whose file changed while its commands ran, before recording it', async () => {
    const effects = new FakeEffects(ok);
    const fingerprint = { dev: '1', ino: '2', size: '3', mtimeNs: '4' };
    const planned = { ...step('a'), plannedFrom: [{ path: '/in/src.qcow2', fingerprint }] };
    const run = effects.run.bind(effects);
    effects.run = async (argv, options) => {
      effects.changed.set('/in/src.qcow2', 'it was modified since the plan was made');
      return run(argv, options);
    };
    const summary = await executePlan(planOf([planned]), { effects, jobs: 1 });
    expect(summary.ok).toBe(false);
    expect(summary.failed[0]?.message).toContain('cannot be used as planned');
    expect(effects.log).toContain('run a');
    expect(effects.log).toContain('discard /out/.a.tmp');
    expect(effects.log.filter((l) => l.startsWith('commit') || l.startsWith('record'))).toEqual([]);
  });

  it('on failure: removes the temporary file, launches nothing new, lets running steps finish', async () => {
    const effects = new FakeEffects();
    const events: ExecutionEvent[] = [];
    const run = executePlan(planOf([step('a'), step('b'), step('c'), step('d', ['a'])]), {
      effects,
      jobs: 2,
      onEvent: (e) => events.push(e),
    });
    await tick();
    effects.release('a', 1);
    await tick();
    effects.release('b');
    const summary = await run;
    expect(summary.ok).toBe(false);
    expect(summary.done).toEqual(['b']);
    expect(summary.failed.map((f) => f.stepId)).toEqual(['a']);
    expect(summary.failed[0]!.message).toContain('boom');
    expect(summary.failed[0]!.argv).toEqual(['qemu-img', 'convert', 'a']);
    expect(summary.notStarted).toEqual(['c', 'd']);
    expect(effects.log).toContain('discard /out/.a.tmp');
    expect(effects.log).not.toContain('commit /out/.a.tmp -> /out/a');
    expect(events.filter((e) => e.type === 'step-progress')).toHaveLength(2);
  });

  it('names the image a failed in-place command may have changed, and none for a temporary file or a check', async () => {
    const failing = () => ({ exitCode: 1, stdout: '', stderr: 'boom' });
    const inPlace = await executePlan(planOf([step('a', [], false)]), { effects: new FakeEffects(failing), jobs: 1 });
    expect(inPlace.failed[0]?.changedInPlace).toBe('/out/a');
    const copy = await executePlan(planOf([step('a')]), { effects: new FakeEffects(failing), jobs: 1 });
    expect(copy.failed[0]).not.toHaveProperty('changedInPlace');
    const check: Step = {
      ...step('x', [], false),
      commands: [{ argv: ['qemu-img', 'compare', 'cmp'], purpose: 'check', check: true }],
    };
    const checked = await executePlan(planOf([check]), {
      effects: new FakeEffects(() => ({ ...failing(), exitCode: 2 })),
      jobs: 1,
    });
    expect(checked.failed[0]?.message).toContain('boom');
    expect(checked.failed[0]).not.toHaveProperty('changedInPlace');
    // A failure after the command wrote in place (here the flush) still names the image.
    const flushFails = new FakeEffects(ok);
    flushFails.flush = async () => {
      throw new Error('EIO');
    };
    const flushed = await executePlan(planOf([step('a', [], false)]), { effects: flushFails, jobs: 1 });
    expect(flushed.failed[0]).toMatchObject({ message: 'a: EIO', changedInPlace: '/out/a' });
    // Nothing was written when the step failed before its command started.
    const refused = new FakeEffects(ok);
    refused.changed.set('/in/src.qcow2', 'it was modified since the plan was made');
    const fingerprint = { dev: '1', ino: '2', size: '3', mtimeNs: '4' };
    const guarded = { ...step('a', [], false), plannedFrom: [{ path: '/in/src.qcow2', fingerprint }] };
    const notStarted = await executePlan(planOf([guarded]), { effects: refused, jobs: 1 });
    expect(notStarted.failed[0]).not.toHaveProperty('changedInPlace');
  });

  it('a check reporting "different" fails a step that has no fallback, changing nothing', async () => {
    const guarded: Step = {
      ...step('x', [], false),
      commands: [
        { argv: ['qemu-img', 'compare', 'cmp'], purpose: 'check', check: true },
        { argv: ['qemu-img', 'rebase', 'cheap'], purpose: 'cheap' },
      ],
    };
    const different = new FakeEffects((id) => (id === 'cmp' ? { exitCode: 1, stdout: '', stderr: '' } : ok()));
    const summary = await executePlan(planOf([guarded]), { effects: different, jobs: 1 });
    expect(summary.failed.map((f) => f.message)).toEqual(['x: the check found a difference, so nothing was changed']);
    expect(different.log).toEqual(['run cmp']);
  });

  it('a check reporting "different" switches to the otherwise commands', async () => {
    const checked: Step = {
      ...step('x', [], false),
      commands: [
        { argv: ['qemu-img', 'compare', 'cmp'], purpose: 'check', check: true },
        { argv: ['qemu-img', 'rebase', 'cheap'], purpose: 'cheap' },
      ],
      otherwise: [{ argv: ['qemu-img', 'rebase', 'safe'], purpose: 'safe' }],
    };
    const different = new FakeEffects((id) => (id === 'cmp' ? { exitCode: 1, stdout: '', stderr: '' } : ok()));
    expect((await executePlan(planOf([checked]), { effects: different, jobs: 1 })).ok).toBe(true);
    expect(different.log).toEqual(['run cmp', 'run safe', 'flush /out/x']);

    const identical = new FakeEffects(ok);
    await executePlan(planOf([checked]), { effects: identical, jobs: 1 });
    expect(identical.log).toEqual(['run cmp', 'run cheap', 'flush /out/x']);

    const broken = new FakeEffects((id) =>
      id === 'cmp' ? { exitCode: 2, stdout: '', stderr: 'qemu-img: cannot open\n' } : ok(),
    );
    const summary = await executePlan(planOf([checked]), { effects: broken, jobs: 1 });
    expect(summary.failed.map((f) => f.message)).toEqual(['qemu-img compare failed (exit 2): cannot open']);
    expect(broken.log).toEqual(['run cmp']);
  });

  it('stops launching when aborted and reports an interrupted run', async () => {
    const effects = new FakeEffects();
    const controller = new AbortController();
    const run = executePlan(planOf([step('a'), step('b', ['a'])]), {
      effects,
      jobs: 1,
      signal: controller.signal,
    });
    await tick();
    controller.abort();
    effects.release('a');
    const summary = await run;
    expect(summary.interrupted).toBe(true);
    expect(summary.ok).toBe(false);
    expect(summary.notStarted).toEqual(['b']);
  });
});

// A temporary folder per test with the input images the test makes; after each test the
// inputs' sha256 must be unchanged (chainform never writes to its inputs).
import { afterEach, beforeEach, expect } from 'vitest';
import { checksums, tempFolder } from './qemu.js';

/** The current test's folder and inputs. */
export interface Workspace {
  dir: string;
  inputs: string[];
  /** Call after a test changes an input on purpose (as a user would), to guard the new content. */
  acceptInputChanges(): Promise<void>;
}

/** Registers beforeEach/afterEach hooks; `makeInputs` creates the inputs and returns their paths. */
export function useWorkspace(makeInputs: (dir: string) => Promise<string[]>): Workspace {
  let cleanup: () => Promise<void> = async () => undefined;
  let before: Record<string, string> = {};
  const workspace: Workspace = {
    dir: '',
    inputs: [],
    async acceptInputChanges() {
      before = await checksums(workspace.inputs);
    },
  };
  beforeEach(async () => {
    const folder = await tempFolder();
    cleanup = folder.cleanup;
    workspace.dir = folder.dir;
    workspace.inputs = await makeInputs(folder.dir);
    before = await checksums(workspace.inputs);
  });
  afterEach(async () => {
    expect(await checksums(workspace.inputs)).toEqual(before);
    await cleanup();
  });
  return workspace;
}

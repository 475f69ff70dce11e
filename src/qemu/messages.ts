// qemu-img's own words from its stderr, for error messages.

/**
 * The last line of a qemu tool's stderr (where it states the error), without its "qemu-img: "
 * prefix. Opening an image wraps the driver's "Could not open 'x': <reason>" in the same words
 * again; that doubled clause is said once (only that one: other repeats are qemu's own nesting,
 * e.g. "Could not open backing file: Could not open backing file: ..." down a chain).
 */
export function qemuMessage(stderr: string): string {
  const last =
    stderr
      .trim()
      .split('\n')
      .at(-1)
      ?.replace(/^qemu-[a-z]+: /, '') ?? '';
  return last.replace(/^(Could not open '.*?': )\1/, '$1');
}

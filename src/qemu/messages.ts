// qemu-img's own words from its stderr, for error messages.

/** The last line of a qemu tool's stderr (where it states the error), without its "qemu-img: " prefix. */
export function qemuMessage(stderr: string): string {
  return (
    stderr
      .trim()
      .split('\n')
      .at(-1)
      ?.replace(/^qemu-[a-z]+: /, '') ?? ''
  );
}

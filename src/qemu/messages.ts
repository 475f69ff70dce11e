// qemu-img's own words from its stderr, for error messages.

/**
 * The last line of a qemu tool's stderr (where it states the error), without its "qemu-img: "
 * prefix, and with a clause qemu repeats said once: opening an image wraps the driver's
 * "Could not open 'x': <reason>" in the same words again.
 */
export function qemuMessage(stderr: string): string {
  const last =
    stderr
      .trim()
      .split('\n')
      .at(-1)
      ?.replace(/^qemu-[a-z]+: /, '') ?? '';
  let message = last;
  for (let repeated = message; ; message = repeated) {
    // "A: A: B" -> "A: B", for a clause A that ends with ": ".
    repeated = message.replace(/^(.+?: )\1/, '$1');
    if (repeated === message) return message;
  }
}

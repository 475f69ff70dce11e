// Shell quoting for command lines people read or paste: plans, progress lines and hints.

/** An argv as a POSIX shell line, quoted only where needed (for display and review). */
export function shellQuote(argv: readonly string[]): string {
  return argv
    .map((arg) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`))
    .join(' ');
}

// Shell quoting for the scripts the benchmarks write and run (argv arrays in, sh lines out).

/** One argument for sh: left bare when plainly safe, else single-quoted. */
export function quote(arg) {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`;
}

/** An argv array as one sh command line. */
export function shellLine(argv) {
  return argv.map(quote).join(' ');
}

/**
 * `chainform ARGS...` as one sh command line, run as a user runs it: through the package's
 * executable (bin/chainform), which starts the `node` on PATH without NODE_EXTRA_CA_CERTS.
 */
export function chainformLine(chainform, ...args) {
  return shellLine([chainform, ...args]);
}

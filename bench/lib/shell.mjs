// Shell quoting for the scripts the benchmarks write and run (argv arrays in, sh lines out).

/** One argument for sh: left bare when plainly safe, else single-quoted. */
export function quote(arg) {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`;
}

/** An argv array as one sh command line. */
export function shellLine(argv) {
  return argv.map(quote).join(' ');
}

/** `node SCRIPT ARGS...` as one sh command line, with this very node binary. */
export function nodeLine(script, ...args) {
  return shellLine([process.execPath, script, ...args]);
}

// Printing a scenario's rows as an aligned text table: median and min-max of every timed figure.
import { MiB } from './images.mjs';

/** `median (min-max)`, or the median alone when the range rounds away. */
const range = (s, digits, scale = 1) => {
  const f = (x) => (x / scale).toFixed(digits);
  return f(s.min) === f(s.max) ? f(s.median) : `${f(s.median)} (${f(s.min)}-${f(s.max)})`;
};

/** A byte count (one measurement) or a spread of them, in MiB. */
const bytes = (b) =>
  b === null || b === undefined ? '-' : typeof b === 'number' ? (b / MiB).toFixed(1) : range(b, 1, MiB);
const ratio = (b, min) => (typeof b === 'number' && min ? `${(b / min).toFixed(2)}x` : '-');

/** The table of one scenario's rows, as lines. A `reference` row (the minimum) sets the ratio columns. */
export function formatTable(rows) {
  const minimum = rows.find((r) => r.reference);
  const header = ['variant', 'wall s', 'qemu read MiB', 'qemu written MiB', 'block out MiB'];
  if (minimum) header.push('read/min', 'written/min');
  const body = rows.map((r) => {
    const cells = [
      // Scenarios that time several operations (flags) name the operation of each row.
      r.operation ? `${r.operation}: ${r.variant}` : r.variant,
      // Rows of sub-second figures (start-up) ask for seconds to the millisecond: wallDigits 3.
      r.wallSeconds ? range(r.wallSeconds, r.wallDigits ?? 2) : '-',
      bytes(r.bytesRead),
      bytes(r.bytesWritten),
      bytes(r.blockOutBytes),
    ];
    if (minimum && !r.reference) {
      cells.push(ratio(r.bytesRead, minimum.bytesRead), ratio(r.bytesWritten, minimum.bytesWritten));
    } else if (minimum) cells.push('', '');
    return cells;
  });
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((cells) => cells[i].length)));
  const line = (cells) =>
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(header), ...body.map(line)];
}

// qemu-img -p prints "    (12.34/100%)" and ends each update with "\r", not "\n".
const PROGRESS = /\((\d+(?:\.\d+)?)\/100%\)/g;

/** The last percentage in a chunk of qemu-img -p output, if any. */
export function parseProgress(chunk: string): number | undefined {
  let last: number | undefined;
  for (const match of chunk.matchAll(PROGRESS)) last = Number(match[1]);
  return last;
}

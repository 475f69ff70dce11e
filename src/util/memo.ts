// Remembering a function's results by key (e.g. per file during one inspection).

/** `compute`, run once per key; later calls with the same key get the first result. */
export function memoize<K, V>(compute: (key: K) => V): (key: K) => V {
  const known = new Map<K, V>();
  return (key) => {
    // One lookup for a remembered value; a second only when undefined may be one.
    const found = known.get(key);
    if (found !== undefined || known.has(key)) return found as V;
    const value = compute(key);
    known.set(key, value);
    return value;
  };
}

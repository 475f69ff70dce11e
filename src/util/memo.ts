// Remembering a function's results by key (e.g. per file during one inspection).

/** `compute`, run once per key; later calls with the same key get the first result. */
export function memoize<K, V>(compute: (key: K) => V): (key: K) => V {
  const known = new Map<K, V>();
  return (key) => {
    if (known.has(key)) return known.get(key) as V;
    const value = compute(key);
    known.set(key, value);
    return value;
  };
}

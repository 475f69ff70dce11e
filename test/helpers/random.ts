// A seeded PRNG for the fuzz and fault-injection tests: every case can be reproduced from its seed.
/** mulberry32: a tiny 32-bit PRNG, fully determined by `seed`; tests never use Math.random. */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

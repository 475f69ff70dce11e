// Which files are known to present the same guest-visible content. Knowledge comes only from
// facts, never assumptions: two names of one file (same device and inode), or an output the
// ledger shows was built from a source and neither has changed since. A union-find keeps the
// equivalence classes.

/**
 * Content key of a file (by identity) read as `format`, or of one of its internal snapshots.
 * The format is part of the key: the same bytes read as qcow2 and as raw are different content.
 */
export function contentKey(fileIdentity: string, format: string, snapshot?: string): string {
  const base = `file:${fileIdentity}:${format}`;
  return snapshot === undefined ? base : `${base}@${snapshot}`;
}

/** Equivalence classes of content keys. */
export class ContentIdentity {
  private readonly parent = new Map<string, string>();

  private find(key: string): string {
    let root = key;
    while (true) {
      const next = this.parent.get(root);
      if (next === undefined || next === root) break;
      root = next;
    }
    this.parent.set(key, root);
    return root;
  }

  /** Records that `a` and `b` present the same content. */
  union(a: string, b: string): void {
    const ra = this.find(a);
    const rb = this.find(b);
    if (ra !== rb) this.parent.set(ra, rb);
  }

  /** True only when `a` and `b` are known to present the same content. */
  same(a: string | undefined, b: string | undefined): boolean {
    if (a === undefined || b === undefined) return false;
    return a === b || this.find(a) === this.find(b);
  }
}

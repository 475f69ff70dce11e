// Expected failures as values: every problem a user can act on is a Diagnostic, never a thrown error.

/** A position in a manifest (1-based line and column), with an optional end for the marked span. */
export interface SourceLocation {
  file: string;
  line: number;
  column: number;
  endLine?: number;
  endColumn?: number;
}

/** Another place that explains a diagnostic, e.g. each edge of a backing cycle. */
export interface RelatedInformation {
  message: string;
  location?: SourceLocation;
}

/** One problem found in a manifest, on disk, or while planning. */
export interface Diagnostic {
  /** Stable kebab-case reason, for scripts and tests (e.g. `unknown-backing`). */
  code: string;
  severity: 'error' | 'warning';
  /** What is wrong, in words a user can act on. */
  message: string;
  location?: SourceLocation;
  /** How to fix it, when there is an obvious fix. */
  hint?: string;
  related?: RelatedInformation[];
}

/** Builds an error diagnostic; `extra` adds location, hint and related places. */
export function error(
  code: string,
  message: string,
  extra: Partial<Omit<Diagnostic, 'code' | 'message' | 'severity'>> = {},
): Diagnostic {
  return { code, severity: 'error', message, ...extra };
}

/** Builds a warning diagnostic: reported, but does not stop a plan. */
export function warning(
  code: string,
  message: string,
  extra: Partial<Omit<Diagnostic, 'code' | 'message' | 'severity'>> = {},
): Diagnostic {
  return { code, severity: 'warning', message, ...extra };
}

/** True when any diagnostic is an error (warnings alone never stop a run). */
export function hasErrors(diagnostics: readonly Diagnostic[]): boolean {
  return diagnostics.some((d) => d.severity === 'error');
}

/** Orders diagnostics by file, line and column so output is deterministic. */
export function sortDiagnostics(diagnostics: readonly Diagnostic[]): Diagnostic[] {
  return [...diagnostics].sort((a, b) => {
    const fa = a.location?.file ?? '';
    const fb = b.location?.file ?? '';
    if (fa !== fb) return fa < fb ? -1 : 1;
    const la = a.location?.line ?? 0;
    const lb = b.location?.line ?? 0;
    if (la !== lb) return la - lb;
    return (a.location?.column ?? 0) - (b.location?.column ?? 0);
  });
}

// Public entry point of the chainform library.

export type { ApplyOptions, EngineOptions, ImportOptions, LoadResult, PlanResult } from './api.js';
export { apply, importLayout, loadManifest, plan, recover, spaceShortfalls, validate } from './api.js';
export type { Diagnostic, SourceLocation } from './diagnostics/diagnostic.js';
export type { ExecutionEvent, RunSummary, StepFailure } from './executor/events.js';
export type { Recovery } from './executor/recover-interrupted.js';
export type { Manifest } from './manifest/manifest.generated.js';
export type { ImagePlan, Plan, SpaceCheck, Step, StepKind } from './planner/plan-types.js';
export type { CommandResult, CommandRunner } from './qemu/runner.js';

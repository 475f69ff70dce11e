// Public entry point of the chainform library.

export type { ApplyOptions, EngineOptions, ImportOptions, LoadResult, PlanOptions, PlanResult } from './api.js';
export {
  apply,
  checkSavedPlan,
  importLayout,
  loadManifest,
  loadSavedPlan,
  plan,
  recover,
  savePlan,
  spaceShortfalls,
  validate,
} from './api.js';
export type { Diagnostic, SourceLocation } from './diagnostics/diagnostic.js';
export type { ExecutionEvent, RunSummary, StepFailure } from './executor/events.js';
export type { Recovery } from './executor/recover-interrupted.js';
export type { Manifest } from './manifest/manifest.generated.js';
export { type ChainGraph, currentGraph, desiredGraph, type GraphNode } from './planner/chain-graph.js';
export { type Drift, type DriftState, driftOf, type ImageDrift } from './planner/drift.js';
export type { ImagePlan, Plan, SpaceCheck, Step, StepKind } from './planner/plan-types.js';
export type { SavedPlan } from './planner/saved-plan.js';
export type { CommandResult, CommandRunner } from './qemu/runner.js';

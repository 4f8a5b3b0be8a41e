/**
 * The JSON reports the CLI prints or writes (docs/schemas.md): each one the library's result in its
 * documented snake_case shape (io/json-shape.ts), with a `schema` and a `provenance` block
 * (verify/provenance.ts) naming the polyquant, Node and machine that made it, the command line, and when.
 * verify builds its own provenance (with engines and per-stage times); convert, inspect and demo get
 * theirs here.
 */
import { jsonReportText } from '../io/json-shape.js';
import { machineProvenance, type Provenance, RunClock } from '../verify/provenance.js';
import { commandLine } from './command-line.js';

/** `convert --json` (new in issue #15: before, the bare plan without a schema). */
export const CONVERT_SCHEMA = 'polyquant.convert/1';

/** A provenance block for a command that took `seconds` and ended now, with one stage named `stage`. */
export function commandProvenance(stage: string, seconds: number): Provenance {
  const ended = Date.now();
  return {
    ...machineProvenance(commandLine()),
    started_at: new Date(ended - seconds * 1000).toISOString(),
    ended_at: new Date(ended).toISOString(),
    duration_s: seconds,
    stages: [{ stage, seconds }],
  };
}

/**
 * `convert --json`: `{ schema, format, …the plan…, provenance }`, the plan being the converter's whole
 * layout (GGUF tensors and offsets, ONNX models and initializers, WebGPU shards and records).
 */
export function convertReportText(format: string, plan: object, seconds: number): string {
  return jsonReportText({ schema: CONVERT_SCHEMA, format, ...plan, provenance: commandProvenance('convert', seconds) });
}

/** A library report (it carries its own `schema`) with the provenance of the command that made it. */
export function reportText(report: { readonly schema: string }, clock: RunClock, engines?: Iterable<string>): string {
  return jsonReportText({ ...report, provenance: clock.finish(engines) });
}

/** A clock for the command now running (its provenance's command line is the CLI's). */
export function commandClock(): RunClock {
  return new RunClock(commandLine());
}

/**
 * "Copy as notebook code": the Python cell that reproduces a run with the kernel toolkit
 * (`pirus_jupyter.connect()` then `client.pipeline(<id>).run(config=..., inputs=[...], name=...)`).
 */
import { IRun } from './api';

/** A Python string literal (JSON escapes are valid Python escapes). */
export function pyString(text: string): string {
  return JSON.stringify(text);
}

/**
 * A JSON value as a Python literal: `true` -> `True`, `null` -> `None`, objects as dicts. Short
 * values stay on one line; longer ones are indented by 4 spaces per level.
 */
export function toPython(value: unknown, indent = 0, width = 88): string {
  const flat = toPythonFlat(value);
  if (flat.length + indent <= width || !isContainer(value)) {
    return flat;
  }
  const pad = ' '.repeat(indent + 4);
  const end = ' '.repeat(indent);
  if (Array.isArray(value)) {
    const items = value.map(v => pad + toPython(v, indent + 4, width) + ',');
    return `[\n${items.join('\n')}\n${end}]`;
  }
  const entries = Object.entries(value as Record<string, unknown>).map(
    ([k, v]) => `${pad}${pyString(k)}: ${toPython(v, indent + 4, width)},`
  );
  return `{\n${entries.join('\n')}\n${end}}`;
}

function isContainer(value: unknown): boolean {
  return (
    Array.isArray(value) ? value.length > 0 : !!value && typeof value === 'object' && Object.keys(value).length > 0
  );
}

function toPythonFlat(value: unknown): string {
  if (value === null || value === undefined) {
    return 'None';
  }
  if (value === true) {
    return 'True';
  }
  if (value === false) {
    return 'False';
  }
  if (typeof value === 'number') {
    if (!isFinite(value)) {
      return isNaN(value) ? 'float("nan")' : value > 0 ? 'float("inf")' : '-float("inf")';
    }
    return String(value);
  }
  if (typeof value === 'string') {
    return pyString(value);
  }
  if (Array.isArray(value)) {
    return `[${value.map(toPythonFlat).join(', ')}]`;
  }
  if (typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).map(
      ([k, v]) => `${pyString(k)}: ${toPythonFlat(v)}`
    );
    return `{${entries.join(', ')}}`;
  }
  return pyString(String(value));
}

export interface IRunSpec {
  pipelineId: number;
  pipelineName?: string | null;
  config: Record<string, unknown>;
  inputs: (string | number)[];
  name?: string | null;
}

export function specFromRun(run: IRun): IRunSpec {
  return {
    pipelineId: run.pipeline_id,
    pipelineName: run.pipeline_name,
    config: run.config ?? {},
    inputs: (run.inputs ?? []).map(i => i.path),
    name: run.name
  };
}

/** The notebook cell for a run. */
export function runCode(spec: IRunSpec): string {
  const lines = ['import pirus_jupyter as pirus', '', 'client = pirus.connect()'];
  if (spec.inputs?.some(i => typeof i === 'string')) {
    lines.push('# input paths are relative to the Jupyter root');
  }
  const comment = spec.pipelineName ? `  # ${spec.pipelineName.replace(/[\r\n]/g, ' ')}` : '';
  const args = [
    `    config=${toPython(spec.config ?? {}, 4)},`,
    `    inputs=${toPython(spec.inputs ?? [], 4)},`
  ];
  if (spec.name) {
    args.push(`    name=${pyString(spec.name)},`);
  }
  lines.push(`run = client.pipeline(${Number(spec.pipelineId)}).run(${comment}`);
  lines.push(...args);
  lines.push(')');
  lines.push('run');
  return lines.join('\n');
}

import { describe, expect, it } from 'vitest';

import { runCode, specFromRun, toPython } from '../notebook';

describe('notebook code', () => {
  it('writes Python literals', () => {
    expect(toPython(null)).toBe('None');
    expect(toPython(true)).toBe('True');
    expect(toPython(false)).toBe('False');
    expect(toPython(3.5)).toBe('3.5');
    expect(toPython('a "q"\n')).toBe('"a \\"q\\"\\n"');
    expect(toPython([1, 'x', null])).toBe('[1, "x", None]');
    expect(toPython({ a: { b: [true] } })).toBe('{"a": {"b": [True]}}');
    expect(toPython({})).toBe('{}');
  });

  it('wraps long values over several lines', () => {
    const long = { alpha: 'a'.repeat(40), beta: 'b'.repeat(40), gamma: [1, 2, 3] };
    expect(toPython(long, 4)).toBe(
      `{\n        "alpha": "${'a'.repeat(40)}",\n        "beta": "${'b'.repeat(40)}",\n        "gamma": [1, 2, 3],\n    }`
    );
  });

  it('reproduces a run with the kernel toolkit', () => {
    const code = runCode(
      specFromRun({
        id: 3,
        pipeline_id: 2,
        pipeline_name: 'count',
        name: 'reads "A"',
        config: { min_length: 10, paired: false },
        inputs: [{ name: 'r.fastq', path: 'pirus-uploads/r.fastq' }],
        status: 'DONE'
      } as any)
    );
    expect(code).toBe(
      [
        'import pirus_jupyter as pirus',
        '',
        'client = pirus.connect()',
        '# input paths are relative to the Jupyter root',
        'run = client.pipeline(2).run(  # count',
        '    config={"min_length": 10, "paired": False},',
        '    inputs=["pirus-uploads/r.fastq"],',
        '    name="reads \\"A\\"",',
        ')',
        'run'
      ].join('\n')
    );
  });

  it('leaves the name out when there is none', () => {
    const code = runCode({ pipelineId: 1, config: {}, inputs: [] });
    expect(code).toContain('run = client.pipeline(1).run(\n    config={},\n    inputs=[],\n)');
    expect(code).not.toContain('name=');
  });
});

import { describe, expect, it } from 'vitest';

import {
  acceptsPath,
  bestPipelineFor,
  errorSchemaFromDetails,
  filePatterns,
  hasFields,
  pruneConfig,
  unplacedErrors
} from '../forms';

const SCHEMA = {
  type: 'object',
  properties: {
    min_length: { type: 'integer' },
    nested: { type: 'object', properties: { depth: { type: 'integer' } } },
    list: { type: 'array', items: { type: 'string' } }
  },
  additionalProperties: false
};

describe('forms', () => {
  it('builds an rjsf error schema from server details', () => {
    expect(
      errorSchemaFromDetails([
        { field: 'min_length', message: '-1 is less than the minimum of 0' },
        { field: 'nested.depth', message: 'depth is required' },
        { field: 'nested.depth', message: 'must be an integer' },
        { field: '', message: "Additional properties are not allowed ('x' was unexpected)" }
      ])
    ).toEqual({
      __errors: ["Additional properties are not allowed ('x' was unexpected)"],
      min_length: { __errors: ['-1 is less than the minimum of 0'] },
      nested: { depth: { __errors: ['depth is required', 'must be an integer'] } }
    });
  });

  it('finds errors that have no field to sit next to', () => {
    const details = [
      { field: 'min_length', message: 'a' },
      { field: 'nested.depth', message: 'b' },
      { field: 'list.0', message: 'c' },
      { field: 'unknown', message: 'd' },
      { field: '', message: 'e' }
    ];
    expect(unplacedErrors(details, SCHEMA).map(e => e.message)).toEqual(['d', 'e']);
  });

  it('prunes keys a closed schema would refuse', () => {
    expect(pruneConfig({ min_length: 1, gone: 2 }, SCHEMA)).toEqual({ min_length: 1 });
    expect(pruneConfig({ a: 1 }, { type: 'object', properties: {} })).toEqual({ a: 1 });
    expect(pruneConfig({ a: 1 }, null)).toEqual({ a: 1 });
  });

  it('knows empty forms', () => {
    expect(hasFields(SCHEMA)).toBe(true);
    expect(hasFields({ type: 'object', properties: {} })).toBe(false);
    expect(hasFields(null)).toBe(false);
  });
});

describe('file patterns', () => {
  const fastq = {
    type: 'object',
    properties: {
      reads: { type: 'string', format: 'file-path', pattern: '\\.f(ast)?q(\\.gz)?$' },
      group: { type: 'object', properties: { list: { type: 'array', items: { type: 'string', format: 'path', pattern: '^\\S+\\.csv$' } } } },
      other: { type: 'string', pattern: '^x' }
    }
  };
  const vcf = { type: 'object', properties: { calls: { type: 'string', format: 'file-path', pattern: '\\.vcf(\\.gz)?$' } } };
  const anything = { type: 'object', properties: { n: { type: 'integer' } } };

  it('collects the patterns of file fields only', () => {
    const patterns = filePatterns(fastq);
    expect(patterns.map(p => p.source)).toEqual(['\\.f(ast)?q(\\.gz)?$', '^\\S+\\.csv$']);
    expect(acceptsPath(patterns, 'data/x.fastq.gz')).toBe(true);
    expect(acceptsPath(patterns, 'data/sheet.csv')).toBe(true);
    expect(acceptsPath(patterns, 'data/calls.vcf')).toBe(false);
    expect(acceptsPath(filePatterns(anything), 'data/calls.vcf')).toBe(true);
    expect(filePatterns({ properties: { a: { format: 'file-path', pattern: '(?<=x' } } })).toEqual([]);
  });

  it('picks the pipeline that fits a selection', () => {
    const forms: [number, Record<string, any> | null][] = [
      [3, anything],
      [2, vcf],
      [1, fastq]
    ];
    expect(bestPipelineFor(forms, ['a.fastq', 'b.fq'])).toBe(1);
    expect(bestPipelineFor(forms, ['a.vcf'])).toBe(2);
    expect(bestPipelineFor(forms, ['notes.txt'])).toBe(3);
    expect(bestPipelineFor([], ['a.vcf'])).toBeUndefined();
  });
});

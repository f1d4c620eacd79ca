import { describe, expect, it } from 'vitest';

import { acceptsFile, formGroups, hiddenProperties, withFileSuggestions } from '../forms';

const schema = {
  type: 'object',
  properties: {
    input: { type: 'string', format: 'file-path', pattern: '^\\S+\\.csv$', mimetype: 'text/csv' },
    outdir: { type: 'string', format: 'directory-path' },
    fasta: { type: 'string', format: 'file-path', pattern: '^\\S+\\.fn?a(sta)?(\\.gz)?$' },
    igenomes_ignore: { type: 'boolean', hidden: true }
  },
  'x-pirus-groups': [
    { id: 'io', title: 'Input/output options', description: '', fa_icon: '', properties: ['input', 'outdir'] },
    { id: 'ref', title: 'Reference', description: '', fa_icon: '', properties: ['fasta', 'igenomes_ignore'] }
  ]
};

describe('nf-core forms', () => {
  it('lists groups and hidden parameters', () => {
    expect(formGroups(schema).map(g => g.title)).toEqual(['Input/output options', 'Reference']);
    expect(formGroups({ type: 'object' })).toEqual([]);
    expect(hiddenProperties(schema)).toEqual(['igenomes_ignore']);
  });

  it('accepts files by pattern and mimetype', () => {
    expect(acceptsFile(schema.properties.input, 'samples.csv')).toBe(true);
    expect(acceptsFile(schema.properties.input, 'my samples.csv')).toBe(false);
    expect(acceptsFile({ mimetype: 'text/csv' }, 'plot.png')).toBe(false);
    expect(acceptsFile({ mimetype: 'text/plain' }, 'genome.fa')).toBe(true);
    expect(acceptsFile({ pattern: '(unclosed' }, 'x')).toBe(false);
  });

  it('offers each file field the files it accepts', () => {
    const drawn = withFileSuggestions(schema, ['samples.csv', 'pirus-uploads/genome.fa.gz', 'reads.fq']);
    expect(drawn.properties.input.examples).toEqual(['samples.csv']);
    expect(drawn.properties.fasta.examples).toEqual(['pirus-uploads/genome.fa.gz']);
    expect(drawn.properties.outdir.examples).toBeUndefined();
    expect(schema.properties.input).not.toHaveProperty('examples'); // the server's schema untouched
    expect(withFileSuggestions(schema, [])).toBe(schema);
  });
});

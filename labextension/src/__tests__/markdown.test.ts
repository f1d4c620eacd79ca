import React from 'react';
import { renderToStaticMarkup } from 'react-dom/server';
import { describe, expect, it } from 'vitest';

import { Markdown, plainText, safeUrl } from '../markdown';

const html = (text: string) => renderToStaticMarkup(React.createElement(Markdown, { text }));

describe('markdown descriptions', () => {
  it('renders the usual inline markup and lists', () => {
    expect(html('Counts **reads** and *bases* with `awk`.')).toContain(
      '<p>Counts <strong>reads</strong> and <em>bases</em> with <code>awk</code>.</p>'
    );
    expect(html('Outputs:\n\n- counts.tsv\n- status.txt')).toContain('<ul><li>counts.tsv</li><li>status.txt</li></ul>');
    expect(html('See [the docs](https://example.org/x).')).toContain(
      '<a href="https://example.org/x" target="_blank" rel="noopener noreferrer">the docs</a>'
    );
  });

  it('gives a one-line plain text for list rows', () => {
    expect(plainText('Counts **reads** and *bases*.\n\n- one `counts.tsv`\n- see [docs](https://x.org)')).toBe(
      'Counts reads and bases. one counts.tsv see docs'
    );
  });

  it('never lets markup or scripts through', () => {
    const out = html('<img src=x onerror=alert(1)> <script>alert(1)</script> [x](javascript:alert(1))');
    expect(out).not.toContain('<img');
    expect(out).not.toContain('<script');
    expect(out).not.toContain('href="javascript');
    expect(out).toContain('&lt;script&gt;');
    expect(safeUrl('javascript:alert(1)')).toBeNull();
  });
});

/**
 * Every user-visible string of the panel's views goes through the translator: a scan of the
 * widgets' sources for text the translator would never see (JSX text, literal labels, titles,
 * placeholders, messages). Names that are not words to translate are listed here.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const WIDGETS = fileURLToPath(new URL('../widgets/', import.meta.url));
const NOT_TRANSLATED = new Set(['Pirus']); // the product's name

function untranslated(source: string): string[] {
  const code = source
    .replace(/^import[\s\S]*?from '[^']+';$/gm, '') // import lists
    .replace(/\/\*[\s\S]*?\*\//g, '') // comments
    .replace(/\/\/.*$/gm, '');
  const found: string[] = [];
  const add = (text: string) => {
    const t = text.trim();
    if (/[A-Za-z]{2}/.test(t) && !NOT_TRANSLATED.has(t)) {
      found.push(t);
    }
  };
  // JSX text between tags (not after an arrow: `=> Promise<…>`), or alone on its line
  for (const m of code.matchAll(/(?<![=-])>([^<>{}()=;]*)</g)) {
    add(m[1]);
  }
  for (const m of code.matchAll(/^\s*([A-Z][a-z]+(?: [^=;(){}<>]*)?)$/gm)) {
    add(m[1]);
  }
  // literal attributes a user reads or hears
  for (const m of code.matchAll(/\b(?:label|title|aria-label|placeholder|alt)="([^"]*)"/g)) {
    add(m[1]);
  }
  for (const m of code.matchAll(/\b(?:label|title|aria-label|placeholder|alt)=\{`([^`]*)`\}/g)) {
    add(m[1]);
  }
  // messages handed to the page
  for (const m of code.matchAll(/\b(?:setError|notify|confirm)\(\s*(['`])([^'`]*)\1/g)) {
    add(m[2]);
  }
  return [...new Set(found)];
}

describe('translations', () => {
  const files = readdirSync(WIDGETS).filter(f => f.endsWith('.tsx'));

  it('scans every view', () => {
    expect(files).toEqual(expect.arrayContaining(['newrun.tsx', 'uploads.tsx', 'sections.tsx', 'runs.tsx']));
  });

  it.each(files)('%s has no string left out of the translator', file => {
    expect(untranslated(readFileSync(WIDGETS + file, 'utf8'))).toEqual([]);
  });

  it('finds what it looks for', () => {
    const sample = [
      '<span>Upload as</span>',
      '<p>',
      '  Left unfinished by an earlier page',
      '</p>',
      '<input placeholder="optional" />',
      '<ActionButton label={`New run with ${f.name}`} />',
      "setError('Choose a pipeline first.');",
      "<span>{trans.__('Upload as')}</span>"
    ].join('\n');
    expect(untranslated(sample)).toEqual([
      'Upload as',
      'Left unfinished by an earlier page',
      'optional',
      'New run with ${f.name}',
      'Choose a pipeline first.'
    ]);
  });
});

/**
 * A small Markdown renderer for pipeline descriptions: paragraphs, bullet lists, **strong**,
 * *emphasis*, `code` and [links](https://...). It builds React elements, never HTML strings,
 * so whatever a package's description holds is shown as text (React escapes it): nothing a
 * package writes runs with JupyterLab's origin. Links are kept only for http(s) URLs.
 */
import React from 'react';

const INLINE = /(`[^`]+`|\*\*[^*]+\*\*|__[^_]+__|\*[^*\s][^*]*\*|_[^_\s][^_]*_|\[[^\]]+\]\([^)\s]+\))/g;

export function safeUrl(url: string): string | null {
  return /^https?:\/\//i.test(url) ? url : null;
}

/** Inline markup of one block of text as React nodes. */
export function renderInline(text: string, key = 'i'): React.ReactNode[] {
  const out: React.ReactNode[] = [];
  let last = 0;
  let n = 0;
  for (const match of text.matchAll(INLINE)) {
    const token = match[0];
    const at = match.index ?? 0;
    if (at > last) {
      out.push(text.slice(last, at));
    }
    const k = `${key}-${n++}`;
    if (token.startsWith('`')) {
      out.push(<code key={k}>{token.slice(1, -1)}</code>);
    } else if (token.startsWith('**') || token.startsWith('__')) {
      out.push(<strong key={k}>{token.slice(2, -2)}</strong>);
    } else if (token.startsWith('[')) {
      const [, label, url] = /^\[([^\]]+)\]\(([^)\s]+)\)$/.exec(token) ?? [];
      const href = url ? safeUrl(url) : null;
      out.push(
        href ? (
          <a key={k} href={href} target="_blank" rel="noopener noreferrer">
            {label}
          </a>
        ) : (
          label ?? token
        )
      );
    } else {
      out.push(<em key={k}>{token.slice(1, -1)}</em>);
    }
    last = at + token.length;
  }
  if (last < text.length) {
    out.push(text.slice(last));
  }
  return out;
}

/** The text without its Markdown marks, on one line (list rows, titles). */
export function plainText(text: string): string {
  return text
    .replace(/\[([^\]]+)\]\([^)\s]+\)/g, '$1')
    .replace(/(\*\*|__|`)/g, '')
    .replace(/(^|\s)[*_]([^*_\s][^*_]*)[*_](?=\s|[.,;:!?]|$)/g, '$1$2')
    .replace(/^\s*[-*+]\s+/gm, '')
    .replace(/\s+/g, ' ')
    .trim();
}

/** Blocks (separated by blank lines): a bullet list when every line starts with - or *. */
export function Markdown(props: { text: string; className?: string }): JSX.Element {
  const blocks = props.text
    .replace(/\r\n?/g, '\n')
    .split(/\n\s*\n/)
    .map(b => b.trim())
    .filter(Boolean);
  return (
    <div className={props.className} data-testid="pirus-markdown">
      {blocks.map((block, i) => {
        const lines = block.split('\n');
        if (lines.every(line => /^\s*[-*+]\s+/.test(line))) {
          return (
            <ul key={i}>
              {lines.map((line, j) => (
                <li key={j}>{renderInline(line.replace(/^\s*[-*+]\s+/, ''), `${i}-${j}`)}</li>
              ))}
            </ul>
          );
        }
        return <p key={i}>{renderInline(lines.join(' '), String(i))}</p>;
      })}
    </div>
  );
}

/**
 * The new-run form's top-level layout (an rjsf ObjectFieldTemplate for the root): nf-core's
 * groups (`x-pirus-groups` of the server's normalised form) as titled sections, hidden
 * parameters behind a "Show hidden parameters" toggle, and each `help_text` (rendered by the
 * server from Markdown without raw HTML, sanitised again here) collapsed under its field.
 * A form without groups or hidden parameters looks as before.
 */
import { Sanitizer } from '@jupyterlab/apputils';
import { ObjectFieldTemplateProps } from '@rjsf/utils';
import React, { useEffect, useState } from 'react';

import { formGroups, hiddenProperties } from '../forms';
import { NULL_TRANS } from './common';

const sanitizer = new Sanitizer();

type Trans = typeof NULL_TRANS;

function HelpText(props: { html: string; trans: Trans }): JSX.Element {
  return (
    <details className="jp-pirus-form-help">
      <summary>{props.trans.__('Help')}</summary>
      <div dangerouslySetInnerHTML={{ __html: sanitizer.sanitize(props.html) }} />
    </details>
  );
}

export function SectionsTemplate(props: ObjectFieldTemplateProps): JSX.Element {
  const [showHidden, setShowHidden] = useState(false);
  // the panel's translator, passed by the form as its formContext
  const trans: Trans = (props.registry?.formContext as { trans?: Trans } | undefined)?.trans ?? NULL_TRANS;
  const schema = props.schema as Record<string, any>;
  const groups = formGroups(schema);
  const hidden = new Set(hiddenProperties(schema));
  const byName = new Map(props.properties.map(p => [p.name, p]));
  // A hidden parameter the server refused is shown: a value out of sight must not block the
  // run unexplained.
  // Once shown for a problem, it stays until the toggle is used: it must not vanish while its
  // value is being corrected.
  const errors = (props.errorSchema || {}) as Record<string, any>;
  const erring = [...hidden].filter(name => errors[name]?.__errors?.length);
  const [revealed, setRevealed] = useState<string[]>([]);
  useEffect(() => {
    if (erring.some(name => !revealed.includes(name))) {
      setRevealed(current => [...new Set([...current, ...erring])]);
    }
  }, [erring.join('\n')]);
  const visible = (name: string) =>
    showHidden || !hidden.has(name) || revealed.includes(name) || erring.includes(name);
  const field = (name: string) => {
    const prop = byName.get(name);
    if (!prop || prop.hidden || !visible(name)) {
      return null;
    }
    const help = schema.properties?.[name]?.['x-pirus-help-html'];
    return (
      <div key={name} className="jp-pirus-form-field" data-property={name}>
        {prop.content}
        {typeof help === 'string' && help ? <HelpText html={help} trans={trans} /> : null}
      </div>
    );
  };
  const grouped = new Set(groups.flatMap(g => g.properties));
  return (
    <div className="jp-pirus-form-sections">
      {props.title ? <h3 className="jp-pirus-form-title">{props.title}</h3> : null}
      {props.description ? <p className="jp-pirus-muted">{props.description}</p> : null}
      {props.properties.filter(p => !grouped.has(p.name)).map(p => field(p.name))}
      {groups.map(group => {
        const shown = group.properties.filter(n => byName.has(n) && visible(n));
        if (!shown.length) {
          return null;
        }
        // fa_icon names a Font Awesome glyph JupyterLab does not ship: the title alone is shown.
        return (
          <section key={group.id} className="jp-pirus-form-section" data-group={group.id} aria-label={group.title}>
            <h4 className="jp-pirus-form-section-title">{group.title}</h4>
            {group.description ? <p className="jp-pirus-muted">{group.description}</p> : null}
            {group.help_html ? <HelpText html={group.help_html} trans={trans} /> : null}
            {shown.map(field)}
          </section>
        );
      })}
      {hidden.size ? (
        <label className="jp-pirus-form-show-hidden">
          <input
            type="checkbox"
            checked={showHidden}
            data-testid="pirus-newrun-show-hidden"
            onChange={e => {
              setShowHidden(e.currentTarget.checked);
              setRevealed([]);
            }}
          />
          <span>{trans.__('Show hidden parameters (%1)', hidden.size)}</span>
        </label>
      ) : null}
    </div>
  );
}

/** The uiSchema of a run form: the sections template at the root. */
export const FORM_UI_SCHEMA = { 'ui:ObjectFieldTemplate': SectionsTemplate };

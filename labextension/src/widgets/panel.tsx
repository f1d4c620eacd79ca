/**
 * The left side panel "Pirus": header (connection state, refresh), three tabs (Pipelines, Runs,
 * Uploads) and the details / new-run views stacked over them.
 */
import { ReactWidget, caretLeftIcon, refreshIcon } from '@jupyterlab/ui-components';
import React, { useState } from 'react';

import { RunFilter } from '../format';
import { pirusIcon } from '../icons';
import { Tab } from '../router';
import { ActionButton, ErrorBanner, IPanelContext, useSignal } from './common';
import { NewRunForm } from './newrun';
import { PipelineDetails, PipelineList } from './pipelines';
import { RunDetails, RunList } from './runs';
import { UploadArea } from './uploads';

const TABS: { id: Tab; label: (trans: IPanelContext['trans']) => string }[] = [
  { id: 'pipelines', label: trans => trans.__('Pipelines') },
  { id: 'runs', label: trans => trans.__('Runs') },
  { id: 'uploads', label: trans => trans.__('Uploads') }
];

function ConnectionState(props: { ctx: IPanelContext }): JSX.Element {
  const { ctx } = props;
  useSignal(ctx.events.stateChanged);
  const state = ctx.events.state;
  const { trans } = ctx;
  const text =
    state === 'open' ? trans.__('live') : state === 'connecting' ? trans.__('connecting…') : trans.__('reconnecting…');
  return (
    <span
      className={`jp-pirus-connection jp-pirus-connection-${state}`}
      role="status"
      title={
        state === 'open'
          ? trans.__('Receiving updates from the server')
          : trans.__('Lost the connection to the server; retrying (the lists may be out of date)')
      }
      data-state={state}
    >
      <span className="jp-pirus-connection-dot" aria-hidden="true" />
      {text}
    </span>
  );
}

function Tabs(props: { ctx: IPanelContext; counts: Record<Tab, number> }): JSX.Element {
  const { ctx } = props;
  const current = ctx.router.tab;
  const onKey = (e: React.KeyboardEvent) => {
    const index = TABS.findIndex(t => t.id === current);
    let next = -1;
    if (e.key === 'ArrowRight') {
      next = (index + 1) % TABS.length;
    } else if (e.key === 'ArrowLeft') {
      next = (index + TABS.length - 1) % TABS.length;
    } else if (e.key === 'Home') {
      next = 0;
    } else if (e.key === 'End') {
      next = TABS.length - 1;
    }
    if (next >= 0) {
      e.preventDefault();
      ctx.router.setTab(TABS[next].id);
      const buttons = (e.currentTarget as HTMLElement).querySelectorAll<HTMLButtonElement>('[role="tab"]');
      buttons[next]?.focus();
    }
  };
  return (
    <div className="jp-pirus-tabs" role="tablist" aria-label={ctx.trans.__('Pirus sections')} onKeyDown={onKey}>
      {TABS.map(tab => {
        const selected = tab.id === current && ctx.router.view.kind === 'list';
        return (
          <button
            key={tab.id}
            role="tab"
            id={`jp-pirus-tab-${tab.id}`}
            aria-selected={tab.id === current}
            aria-controls="jp-pirus-body"
            tabIndex={tab.id === current ? 0 : -1}
            className={`jp-pirus-tab${tab.id === current ? ' jp-mod-current' : ''}${selected ? ' jp-mod-selected' : ''}`}
            data-tab={tab.id}
            onClick={() => ctx.router.setTab(tab.id)}
          >
            {tab.label(ctx.trans)}
            {props.counts[tab.id] ? <span className="jp-pirus-count">{props.counts[tab.id]}</span> : null}
          </button>
        );
      })}
    </div>
  );
}

export function PanelView(props: { ctx: IPanelContext }): JSX.Element {
  const { ctx } = props;
  useSignal(ctx.router.changed);
  useSignal(ctx.model.changed);
  useSignal(ctx.uploads.changed);
  const [filter, setFilter] = useState<RunFilter>('all');
  const view = ctx.router.view;

  const activeRuns = ctx.model.runList('active').length;
  const activeUploads = ctx.uploads.items.filter(i => i.state === 'uploading' || i.state === 'starting').length;
  const counts: Record<Tab, number> = {
    pipelines: ctx.model.pipelines.size,
    runs: activeRuns,
    uploads: activeUploads
  };

  let body: JSX.Element;
  if (view.kind === 'pipeline') {
    body = <PipelineDetails key={`p${view.id}`} ctx={ctx} id={view.id} />;
  } else if (view.kind === 'run') {
    body = <RunDetails key={`r${view.id}`} ctx={ctx} id={view.id} />;
  } else if (view.kind === 'new-run') {
    body = <NewRunForm key={`n${ctx.router.serial}`} ctx={ctx} view={view} />;
  } else if (ctx.router.tab === 'runs') {
    body = <RunList ctx={ctx} filter={filter} onFilter={setFilter} />;
  } else if (ctx.router.tab === 'uploads') {
    body = <UploadArea ctx={ctx} />;
  } else {
    body = <PipelineList ctx={ctx} />;
  }

  return (
    <div className="jp-pirus-panel-inner">
      <header className="jp-pirus-header">
        <pirusIcon.react tag="span" className="jp-pirus-logo" />
        <h1 className="jp-pirus-title">Pirus</h1>
        <ConnectionState ctx={ctx} />
        <span className="jp-pirus-spacer" />
        <ActionButton
          label={ctx.trans.__('Refresh')}
          icon={refreshIcon}
          iconOnly
          busy={ctx.model.loading}
          onClick={() => void ctx.model.refresh()}
          testId="pirus-refresh"
        />
      </header>
      <Tabs ctx={ctx} counts={counts} />
      <ErrorBanner message={ctx.model.loadError} title={ctx.trans.__('Cannot load the Pirus state')} />
      <div id="jp-pirus-body" className="jp-pirus-body" role="tabpanel" aria-labelledby={`jp-pirus-tab-${ctx.router.tab}`}>
        {view.kind !== 'list' ? (
          <div className="jp-pirus-back">
            <button className="jp-pirus-link" onClick={() => ctx.router.back()} data-testid="pirus-back">
              <caretLeftIcon.react tag="span" />
              {ctx.trans.__('Back')}
            </button>
          </div>
        ) : null}
        {body}
      </div>
    </div>
  );
}

export class PirusPanel extends ReactWidget {
  constructor(readonly ctx: IPanelContext) {
    super();
    this.id = 'pirus-panel';
    this.addClass('jp-pirus-panel');
    this.title.icon = pirusIcon;
    this.title.caption = ctx.trans.__('Pirus pipelines and runs');
  }

  render(): JSX.Element {
    return <PanelView ctx={this.ctx} />;
  }
}

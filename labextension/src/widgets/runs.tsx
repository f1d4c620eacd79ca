/**
 * Runs: the live list (status filter, progress, elapsed time) and the details view (config,
 * inputs, outputs that open in JupyterLab, live log tail, metrics, actions, re-run, notebook
 * code).
 */
import {
  copyIcon,
  deleteIcon,
  folderIcon,
  notebookIcon,
  pauseIcon,
  redoIcon,
  runIcon,
  stopIcon
} from '@jupyterlab/ui-components';
import React, { useEffect, useRef, useState } from 'react';

import { dirName, errorMessage, IRun, IRunFile, RUN_STATUSES } from '../api';
import type { RunLineage } from '../schema';
import {
  allowedActions,
  elapsedLabel,
  formatBytes,
  formatDuration,
  formatTime,
  isFinal,
  progressFraction,
  progressLabel,
  RunFilter,
  statusTone
} from '../format';
import { runCode, specFromRun } from '../notebook';
import { RUNS_PAGE } from '../model';
import {
  ActionButton,
  EmptyState,
  ErrorBanner,
  Field,
  IPanelContext,
  ProgressBar,
  StatusBadge,
  useAction,
  useNow,
  useSignal
} from './common';

const FILTER_LABELS: Record<string, (trans: IPanelContext['trans']) => string> = {
  all: trans => trans.__('All runs'),
  active: trans => trans.__('Active (not finished)'),
  final: trans => trans.__('Finished')
};

export function RunList(props: {
  ctx: IPanelContext;
  filter: RunFilter;
  onFilter: (filter: RunFilter) => void;
}): JSX.Element {
  const { ctx, filter } = props;
  const { trans } = ctx;
  useSignal(ctx.model.changed);
  const runs = ctx.model.runList(filter);
  const counts = ctx.model.countByStatus();
  const now = useNow(runs.some(r => !isFinal(r.status)));
  const total = ctx.model.runs.size;

  return (
    <div className="jp-pirus-runs">
      <div className="jp-pirus-toolbar jp-pirus-toolbar-wrap">
        <label className="jp-pirus-inline-field">
          <span>{trans.__('Show')}</span>
          <select
            className="jp-pirus-select"
            value={filter}
            aria-label={trans.__('Filter runs by status')}
            data-testid="pirus-run-filter"
            onChange={e => props.onFilter(e.currentTarget.value as RunFilter)}
          >
            {(['all', 'active', 'final'] as const).map(f => (
              <option key={f} value={f}>
                {FILTER_LABELS[f](trans)}
              </option>
            ))}
            {RUN_STATUSES.map(s => (
              <option key={s} value={s}>
                {s} ({counts[s] || 0})
              </option>
            ))}
          </select>
        </label>
        <span className="jp-pirus-spacer" />
        <ActionButton
          label={trans.__('New run')}
          icon={runIcon}
          variant="primary"
          onClick={() => ctx.router.show({ kind: 'new-run', inputs: ctx.host.selectedFiles() })}
          testId="pirus-new-run"
        />
      </div>
      {!runs.length ? (
        <EmptyState
          title={
            !ctx.model.loaded
              ? trans.__('Loading runs…')
              : total
                ? trans.__('No run matches this filter')
                : trans.__('No run yet')
          }
        >
          {ctx.model.loaded && !total ? (
            <p>
              {trans.__(
                'Start one with “New run”, or right-click files in the file browser and choose “Run Pirus pipeline on selected files”.'
              )}
            </p>
          ) : null}
        </EmptyState>
      ) : (
        <ul className="jp-pirus-list" aria-label={trans.__('Runs')}>
          {runs.map(run => (
            <li key={run.id} className="jp-pirus-list-item" data-run-id={run.id} data-status={run.status}>
              <button
                className="jp-pirus-row"
                onClick={() => ctx.router.show({ kind: 'run', id: run.id })}
                aria-label={trans.__('Run %1, %2', run.name, run.status)}
              >
                <span className="jp-pirus-row-main">
                  <span className="jp-pirus-row-title">
                    <span className="jp-pirus-name" title={run.name}>
                      {run.name}
                    </span>
                    <StatusBadge status={run.status} />
                  </span>
                  <span className="jp-pirus-row-sub">
                    #{run.id} · {run.pipeline_name} {run.pipeline_version ?? ''}
                    {run.location ? <span className="jp-pirus-location"> · {trans.__('on %1', run.location)}</span> : null}
                    {run.origin === 'tes' ? <span className="jp-pirus-origin" title={trans.__('Made through the GA4GH TES endpoint')}> · {trans.__('TES task')}</span> : null}
                    <span className="jp-pirus-elapsed">{elapsedLabel(run, now)}</span>
                  </span>
                  <ProgressBar
                    fraction={run.status === 'WAITING' ? 0 : progressFraction(run.progress, run.status)}
                    tone={statusTone(run.status)}
                    label={progressLabel(run.progress, run.status)}
                  />
                </span>
              </button>
            </li>
          ))}
        </ul>
      )}
      {ctx.model.runsTotal > RUNS_PAGE ? (
        <p className="jp-pirus-muted">
          Showing the newest {RUNS_PAGE} of {ctx.model.runsTotal} runs.
        </p>
      ) : null}
    </div>
  );
}

function FileList(props: { ctx: IPanelContext; files: IRunFile[]; label: string; testId: string }): JSX.Element {
  const { ctx, files } = props;
  const { trans } = ctx;
  if (!files.length) {
    return <p className="jp-pirus-muted">{trans.__('None.')}</p>;
  }
  return (
    <ul className="jp-pirus-list jp-pirus-files" aria-label={props.label} data-testid={props.testId}>
      {files.map(f => (
        <li key={f.path} className="jp-pirus-list-item jp-pirus-file" data-file-path={f.path}>
          <button
            className="jp-pirus-link jp-pirus-name"
            title={`${f.path}${f.sha256 ? `\nsha256 ${f.sha256}` : ''}`}
            onClick={() => ctx.host.openFile(f.path)}
          >
            {f.name}
          </button>
          <span className="jp-pirus-muted">{formatBytes(f.size)}</span>
          <span className="jp-pirus-spacer" />
          <ActionButton
            label={trans.__('Show %1 in the file browser', f.name)}
            icon={folderIcon}
            iconOnly
            onClick={() => ctx.host.showInFileBrowser(dirName(f.path))}
          />
        </li>
      ))}
    </ul>
  );
}

/** "Reused from #N" (a link to it), or why a run asked to reuse ran instead. */
function ReuseNote(props: { ctx: IPanelContext; run: IRun }): JSX.Element | null {
  const { ctx, run } = props;
  const { trans } = ctx;
  if (run.reused_from !== null && run.reused_from !== undefined) {
    const from = run.reused_from;
    return (
      <p className="jp-pirus-muted jp-pirus-reuse" data-testid="pirus-run-reused-from">
        {trans.__('Reused from')}{' '}
        <button className="jp-pirus-link" onClick={() => ctx.router.show({ kind: 'run', id: from })}>
          {trans.__('run #%1', from)}
        </button>{' '}
        {trans.__('(same image, config, inputs and databases): no container ran.')}
      </p>
    );
  }
  if (run.reuse_miss) {
    return (
      <p className="jp-pirus-muted jp-pirus-reuse" data-testid="pirus-run-reuse-miss">
        {trans.__('Not reused: %1', run.reuse_miss.message)}
      </p>
    );
  }
  return null;
}

/** The runs whose outputs fed this run and those it fed: the graph the notebook draws (an
 * SVG made by the server), then two lists of links. */
function LineageView(props: { ctx: IPanelContext; run: IRun }): JSX.Element | null {
  const { ctx, run } = props;
  const [lineage, setLineage] = useState<RunLineage | null>(null);
  const [picture, setPicture] = useState<string | null>(null);
  const final = isFinal(run.status);
  useEffect(() => {
    let live = true;
    let url: string | null = null;
    ctx.api
      .runLineage(run.id)
      .then(l => {
        if (!live) {
          return;
        }
        setLineage(l);
        if (l.edges.length) {
          // As an <img>: an SVG shown as an image runs nothing.
          return ctx.api.runLineageSvg(run.id).then(blob => {
            if (live) {
              url = URL.createObjectURL(blob);
              setPicture(url);
            }
          });
        }
      })
      .catch(() => live && setLineage(null));
    return () => {
      live = false;
      if (url) {
        URL.revokeObjectURL(url);
      }
    };
  }, [run.id, final]);
  if (!lineage || lineage.edges.length === 0) {
    return null;
  }
  const names = new Map(lineage.nodes.map(n => [n.id, n]));
  const link = (id: number, files: string[]) => {
    const node = names.get(id);
    return (
      <li key={id} className="jp-pirus-list-item">
        <button className="jp-pirus-link" onClick={() => ctx.router.show({ kind: 'run', id })}>
          #{id} {node?.name ?? ''}
        </button>
        <span className="jp-pirus-muted">
          {' '}
          {node?.status ?? ''} · {files.join(', ')}
        </span>
      </li>
    );
  };
  const from = lineage.edges.filter(e => e.to === run.id);
  const into = lineage.edges.filter(e => e.from === run.id);
  return (
    <section className="jp-pirus-section" data-testid="pirus-run-lineage">
      <h3>{ctx.trans.__('Lineage')}</h3>
      {picture ? (
        <img
          className="jp-pirus-lineage"
          data-testid="pirus-run-lineage-graph"
          src={picture}
          alt={ctx.trans.__('Lineage of run %1', run.id)}
        />
      ) : null}
      {from.length ? (
        <>
          <p className="jp-pirus-muted">{ctx.trans.__('Made from the outputs of')}</p>
          <ul className="jp-pirus-list">{from.map(e => link(e.from, e.files))}</ul>
        </>
      ) : null}
      {into.length ? (
        <>
          <p className="jp-pirus-muted">{ctx.trans.__('Its outputs fed')}</p>
          <ul className="jp-pirus-list">{into.map(e => link(e.to, e.files))}</ul>
        </>
      ) : null}
      <p className="jp-pirus-muted">
        {lineage.nodes.length} runs linked in all{lineage.truncated ? ' (more not shown)' : ''}.
      </p>
    </section>
  );
}

function LogTail(props: { ctx: IPanelContext; run: IRun }): JSX.Element {
  const { ctx, run } = props;
  // null until the first read: then the stream that has output (stderr when stdout is empty)
  const [which, setWhich] = useState<'out' | 'err' | null>(null);
  const [text, setText] = useState('');
  const [error, setError] = useState<string | null>(null);
  const pre = useRef<HTMLPreElement>(null);
  const stick = useRef(true);
  const active = !isFinal(run.status);
  const progressKey = `${run.status}:${run.progress?.value ?? ''}`;

  useEffect(() => {
    if (which !== null) {
      return;
    }
    let live = true;
    Promise.all([ctx.api.runLog(run.id, 'out', ctx.settings.logLines), ctx.api.runLog(run.id, 'err', ctx.settings.logLines)])
      .then(([out, err]) => {
        if (live) {
          setWhich(!out.trim() && err.trim() ? 'err' : 'out');
          setText(!out.trim() && err.trim() ? err : out);
        }
      })
      .catch(e => {
        if (live) {
          setWhich('out');
          setError(errorMessage(e));
        }
      });
    return () => {
      live = false;
    };
  }, [run.id, which]);

  useEffect(() => {
    if (which === null) {
      return;
    }
    let live = true;
    const load = () =>
      ctx.api
        .runLog(run.id, which, ctx.settings.logLines)
        .then(t => {
          if (live) {
            setText(t);
            setError(null);
          }
        })
        .catch(e => live && setError(errorMessage(e)));
    void load();
    const timer = active ? setInterval(load, 2000) : null;
    return () => {
      live = false;
      if (timer) {
        clearInterval(timer);
      }
    };
  }, [run.id, which, active, progressKey]);

  useEffect(() => {
    if (pre.current && stick.current) {
      pre.current.scrollTop = pre.current.scrollHeight;
    }
  }, [text]);

  return (
    <section className="jp-pirus-section">
      <div className="jp-pirus-section-head">
        <h3>{active ? ctx.trans.__('Log (live)') : ctx.trans.__('Log')}</h3>
        <div className="jp-pirus-segmented" role="tablist" aria-label={ctx.trans.__('Log stream')}>
          {(['out', 'err'] as const).map(w => (
            <button
              key={w}
              role="tab"
              aria-selected={which === w}
              className={which === w ? 'jp-mod-selected' : ''}
              onClick={() => setWhich(w)}
            >
              {w === 'out' ? 'stdout' : 'stderr'}
            </button>
          ))}
        </div>
      </div>
      <ErrorBanner message={error} trans={ctx.trans} />
      <pre
        ref={pre}
        className="jp-pirus-log"
        tabIndex={0}
        aria-label={which === 'out' ? ctx.trans.__('Last lines of standard output') : ctx.trans.__('Last lines of standard error')}
        data-testid="pirus-log"
        onScroll={e => {
          const el = e.currentTarget;
          stick.current = el.scrollTop + el.clientHeight >= el.scrollHeight - 8;
        }}
      >
        {text || (which === null ? ctx.trans.__('Loading…') : active ? ctx.trans.__('Waiting for output…') : ctx.trans.__('(empty)'))}
      </pre>
    </section>
  );
}

function Metrics(props: { run: IRun; trans: IPanelContext['trans'] }): JSX.Element | null {
  const { trans } = props;
  const m = props.run.metrics;
  if (!m) {
    return null;
  }
  const phases = m.phases && typeof m.phases === 'object' ? Object.entries(m.phases) : [];
  return (
    <section className="jp-pirus-section">
      <h3>{trans.__('Metrics')}</h3>
      <dl className="jp-pirus-fields" data-testid="pirus-metrics">
        <Field label={trans.__('Wall time')}>{formatDuration(m.wall_seconds)}</Field>
        <Field label={trans.__('CPU time')}>{typeof m.cpu_seconds === 'number' ? `${m.cpu_seconds.toFixed(2)} s` : null}</Field>
        <Field label={trans.__('Peak memory')}>{formatBytes(m.memory_peak_bytes)}</Field>
        {phases.map(([phase, seconds]) => (
          <Field key={phase} label={phase}>
            {typeof seconds === 'number' ? `${seconds.toFixed(1)} s` : String(seconds)}
          </Field>
        ))}
      </dl>
    </section>
  );
}

function ConfigView(props: { config: Record<string, unknown> | null; trans: IPanelContext['trans'] }): JSX.Element {
  const entries = Object.entries(props.config || {});
  if (!entries.length) {
    return <p className="jp-pirus-muted">{props.trans.__('Defaults (no setting).')}</p>;
  }
  return (
    <dl className="jp-pirus-fields jp-pirus-config" data-testid="pirus-config">
      {entries.map(([k, v]) => (
        <React.Fragment key={k}>
          <dt>{k}</dt>
          <dd>
            <code>{typeof v === 'string' ? v : JSON.stringify(v)}</code>
          </dd>
        </React.Fragment>
      ))}
    </dl>
  );
}

export function RunDetails(props: { ctx: IPanelContext; id: number }): JSX.Element {
  const { ctx, id } = props;
  const { trans } = ctx;
  useSignal(ctx.model.changed);
  const run = ctx.model.runs.get(id);
  const action = useAction();
  const [missing, setMissing] = useState(false);
  const now = useNow(!!run && !isFinal(run.status));

  useEffect(() => {
    ctx.model.loadRun(id).catch(e => {
      setMissing(true);
      action.setError(errorMessage(e));
    });
  }, [id]);

  if (!run) {
    return (
      <EmptyState title={missing ? trans.__('This run does not exist (any more)') : trans.__('Loading run…')}>
        <ErrorBanner message={action.error} />
      </EmptyState>
    );
  }

  const allowed = allowedActions(run.status);
  const act = (name: 'pause' | 'resume' | 'cancel') =>
    void action.run(name, async () => {
      const since = ctx.model.mark();
      const updated = await ctx.api.runAction(id, name);
      ctx.model.applyRecord('run', updated, since);
    });
  const remove = async () => {
    const ok = await ctx.host.confirm(
      trans.__('Delete run'),
      trans.__('Delete run #%1 “%2” and its folder (inputs, outputs, logs)?', run.id, run.name),
      trans.__('Delete'),
      true
    );
    if (ok && (await action.run('delete', () => ctx.api.deleteRun(id)))) {
      ctx.model.applyEvent({ type: 'run.deleted', data: { id } });
      ctx.router.back();
    }
  };
  const code = runCode(specFromRun(run));
  const cancel = async () => {
    const ok = await ctx.host.confirm(
      trans.__('Cancel run'),
      trans.__('Cancel run #%1 “%2”?', run.id, run.name),
      trans.__('Cancel run'),
      true
    );
    if (ok) {
      act('cancel');
    }
  };

  return (
    <div className="jp-pirus-details" data-run-id={run.id} data-status={run.status}>
      <div className="jp-pirus-details-head">
        <div>
          <h2 className="jp-pirus-details-title" title={run.name}>
            {run.name}
          </h2>
          <StatusBadge status={run.status} />
          {run.reused_from !== null && run.reused_from !== undefined ? (
            <>
              {' '}
              <span
                className="jp-pirus-status jp-pirus-status-muted jp-pirus-reused"
                data-testid="pirus-run-reused"
                title={trans.__('No container ran: the outputs are those of run #%1, an identical run', run.reused_from)}
              >
                {trans.__('reused')}
              </span>
            </>
          ) : null}
          <span className="jp-pirus-muted">
            {' '}
            #{run.id} · {run.pipeline_name} {run.pipeline_version ?? ''}
            {run.location ? <span className="jp-pirus-location"> · {trans.__('on cluster member %1', run.location)}</span> : null}
            {run.origin === 'tes' ? <span className="jp-pirus-origin"> · {trans.__('GA4GH TES task')}</span> : null}
          </span>
        </div>
      </div>
      <ProgressBar
        fraction={run.status === 'WAITING' ? 0 : progressFraction(run.progress, run.status)}
        tone={statusTone(run.status)}
        label={[progressLabel(run.progress, run.status), elapsedLabel(run, now)].filter(Boolean).join(' · ')}
      />
      <ErrorBanner message={run.error} title={run.status === 'ERROR' ? trans.__('Run failed') : undefined} />
      <ErrorBanner message={action.error} onDismiss={() => action.setError(null)} trans={trans} />
      <ReuseNote ctx={ctx} run={run} />
      <div className="jp-pirus-toolbar jp-pirus-toolbar-wrap">
        {allowed.has('pause') ? (
          <ActionButton label={trans.__('Pause')} icon={pauseIcon} busy={action.busy === 'pause'} onClick={() => act('pause')} testId="pirus-run-pause" />
        ) : null}
        {allowed.has('resume') ? (
          <ActionButton label={trans.__('Resume')} icon={runIcon} busy={action.busy === 'resume'} onClick={() => act('resume')} testId="pirus-run-resume" />
        ) : null}
        {allowed.has('cancel') ? (
          <ActionButton
            label={trans.__('Cancel')}
            icon={stopIcon}
            variant="danger"
            busy={action.busy === 'cancel'}
            onClick={() => void cancel()}
            testId="pirus-run-cancel"
          />
        ) : null}
        {allowed.has('delete') ? (
          <ActionButton
            label={trans.__('Delete')}
            icon={deleteIcon}
            variant="danger"
            busy={action.busy === 'delete'}
            onClick={() => void remove()}
            testId="pirus-run-delete"
          />
        ) : null}
        <ActionButton
          label={trans.__('Re-run')}
          icon={redoIcon}
          onClick={() =>
            ctx.router.show({
              kind: 'new-run',
              pipelineId: run.pipeline_id,
              inputs: (run.inputs || []).map(i => i.path),
              config: run.config || {},
              name: run.name,
              rerunOf: run.id
            })
          }
          testId="pirus-run-rerun"
        />
        <ActionButton
          label={trans.__('Copy as notebook code')}
          icon={copyIcon}
          onClick={() => {
            ctx.host.copyToClipboard(code);
            ctx.host.notify(trans.__('Notebook code copied to the clipboard'), 'info');
          }}
          testId="pirus-run-copy-code"
        />
        <ActionButton
          label={trans.__('Insert into notebook')}
          icon={notebookIcon}
          onClick={() => void action.run('insert', () => ctx.host.insertIntoNotebook(code))}
          testId="pirus-run-insert-code"
        />
      </div>
      <dl className="jp-pirus-fields">
        <Field label={trans.__('Created')}>{formatTime(run.created)}</Field>
        <Field label={trans.__('Started')}>{formatTime(run.start)}</Field>
        <Field label={trans.__('Ended')}>{formatTime(run.end)}</Field>
        <Field label={trans.__('Exit code')}>{run.exit_code === null || run.exit_code === undefined ? null : String(run.exit_code)}</Field>
      </dl>
      <section className="jp-pirus-section">
        <h3>{trans.__('Configuration')}</h3>
        <ConfigView config={run.config} trans={trans} />
      </section>
      <section className="jp-pirus-section">
        <h3>{trans.__('Inputs')}</h3>
        <FileList ctx={ctx} files={run.inputs || []} label={trans.__('Inputs')} testId="pirus-inputs" />
      </section>
      <section className="jp-pirus-section">
        <h3>{trans.__('Outputs')}</h3>
        {run.status === 'DONE' || (run.outputs && run.outputs.length) ? (
          <FileList ctx={ctx} files={run.outputs || []} label={trans.__('Outputs')} testId="pirus-outputs" />
        ) : isFinal(run.status) ? (
          <p className="jp-pirus-muted" data-testid="pirus-no-outputs">
            {trans.__('None recorded: the run ended %1.', run.status)}
          </p>
        ) : (
          <p className="jp-pirus-muted">{trans.__('Listed when the run is done.')}</p>
        )}
      </section>
      <LogTail ctx={ctx} run={run} />
      <Metrics run={run} trans={trans} />
      <LineageView ctx={ctx} run={run} />
      <details className="jp-pirus-section jp-pirus-code">
        <summary>{trans.__('Notebook code')}</summary>
        <pre data-testid="pirus-run-code">{code}</pre>
      </details>
    </div>
  );
}

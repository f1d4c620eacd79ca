/**
 * Pipelines: the list (icon, name, version, status with live install progress, description)
 * and the details view (manifest fields, documents, form preview, uninstall).
 */
import { FormComponent, addIcon, deleteIcon, runIcon } from '@jupyterlab/ui-components';
import validator from '@rjsf/validator-ajv8';
import React, { useEffect, useState } from 'react';

import { errorMessage, IPipeline, PirusAPI } from '../api';
import { formatBytes, formatTime } from '../format';
import { hasFields } from '../forms';
import { pipelineIcon } from '../icons';
import { Markdown, plainText } from '../markdown';
import {
  ActionButton,
  EmptyState,
  ErrorBanner,
  Field,
  IPanelContext,
  ProgressBar,
  StatusBadge,
  useAction,
  useSignal
} from './common';

const iconCache = new Map<number, Promise<string | null>>();

function iconUrl(api: PirusAPI, id: number): Promise<string | null> {
  let url = iconCache.get(id);
  if (!url) {
    url = api
      .pipelineIcon(id)
      .then(blob => (blob ? URL.createObjectURL(blob) : null))
      .catch(() => null);
    iconCache.set(id, url);
  }
  return url;
}

/** The pipeline's own icon (fetched with the panel's credentials), or a generic one. */
export function PipelineIcon(props: { api: PirusAPI; pipeline: IPipeline; size?: number }): JSX.Element {
  const { api, pipeline } = props;
  const [src, setSrc] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    // has_icon: no request that could only 404 (and show in the browser console)
    if (pipeline.status === 'READY' && pipeline.has_icon) {
      void iconUrl(api, pipeline.id).then(url => live && setSrc(url));
    }
    return () => {
      live = false;
    };
  }, [pipeline.id, pipeline.status, pipeline.has_icon]);
  const size = props.size ?? 32;
  return src ? (
    <img className="jp-pirus-pipeline-icon" src={src} width={size} height={size} alt="" />
  ) : (
    <pipelineIcon.react
      tag="span"
      className="jp-pirus-pipeline-icon jp-pirus-pipeline-icon-default"
      width={`${size}px`}
      height={`${size}px`}
    />
  );
}

function installProgress(p: IPipeline, trans: IPanelContext['trans']): JSX.Element | null {
  if (p.status === 'UPLOADING') {
    const fraction = p.size ? Math.min(1, (p.upload_offset || 0) / p.size) : null;
    return (
      <ProgressBar
        fraction={fraction}
        label={
          p.size
            ? trans.__('uploading %1 / %2', formatBytes(p.upload_offset || 0), formatBytes(p.size))
            : trans.__('uploading %1', formatBytes(p.upload_offset || 0))
        }
      />
    );
  }
  if (p.status === 'INSTALLING') {
    return <ProgressBar fraction={null} label={trans.__('installing into LXD…')} />;
  }
  return null;
}

/** "Clear failed installs": every pipeline in ERROR removed in one request. */
function ClearFailed(props: { ctx: IPanelContext; count: number }): JSX.Element {
  const { ctx, count } = props;
  const { trans } = ctx;
  const action = useAction();
  const clear = async () => {
    const ok = await ctx.host.confirm(
      trans.__('Clear failed installs'),
      trans._n(
        'Remove the pipeline whose install failed? Nothing was installed for it.',
        'Remove the %1 pipelines whose install failed? Nothing was installed for them.',
        count
      ),
      trans.__('Clear'),
      true
    );
    if (ok && (await action.run('clear', () => ctx.api.clearFailedPipelines()))) {
      await ctx.model.refresh();
    }
  };
  return (
    <div className="jp-pirus-toolbar">
      <span className="jp-pirus-muted">{trans._n('%1 failed install', '%1 failed installs', count)}</span>
      <span className="jp-pirus-spacer" />
      <ActionButton
        label={trans.__('Clear failed')}
        icon={deleteIcon}
        busy={action.busy === 'clear'}
        onClick={() => void clear()}
        testId="pirus-clear-failed"
      />
      <ErrorBanner message={action.error} onDismiss={() => action.setError(null)} trans={trans} />
    </div>
  );
}

export function PipelineList(props: { ctx: IPanelContext }): JSX.Element {
  const { ctx } = props;
  const { trans } = ctx;
  useSignal(ctx.model.changed);
  const pipelines = ctx.model.pipelineList();
  const failed = pipelines.filter(p => p.status === 'ERROR').length;
  if (!pipelines.length) {
    return (
      <EmptyState title={ctx.model.loaded ? trans.__('No pipeline installed') : trans.__('Loading pipelines…')} icon={pipelineIcon}>
        {ctx.model.loaded ? (
          <>
            <p>{trans.__('Upload a pipeline package (a .tar.gz built with the Pirus builder) to install it.')}</p>
            <ActionButton label={trans.__('Upload a pipeline')} icon={addIcon} onClick={() => ctx.router.setTab('uploads')} />
          </>
        ) : null}
      </EmptyState>
    );
  }
  return (
    <>
    {failed ? <ClearFailed ctx={ctx} count={failed} /> : null}
    <ul className="jp-pirus-list" aria-label={trans.__('Pipelines')}>
      {pipelines.map(p => (
        <li key={p.id} className="jp-pirus-list-item" data-pipeline-id={p.id} data-status={p.status}>
          <button
            className="jp-pirus-row"
            onClick={() => ctx.router.show({ kind: 'pipeline', id: p.id })}
            aria-label={trans.__('Pipeline %1 %2, %3', p.name, p.version ?? '', p.status)}
          >
            <PipelineIcon api={ctx.api} pipeline={p} />
            <span className="jp-pirus-row-main">
              <span className="jp-pirus-row-title">
                <span className="jp-pirus-name" title={p.name}>
                  {p.name}
                </span>
                {p.version ? <span className="jp-pirus-version">{p.version}</span> : null}
                <StatusBadge status={p.status} />
              </span>
              {p.description ? (
                <span className="jp-pirus-row-sub" title={plainText(p.description)}>
                  {plainText(p.description)}
                </span>
              ) : null}
              {p.status === 'ERROR' && p.error ? (
                <span className="jp-pirus-row-error" title={p.error}>
                  {p.error}
                </span>
              ) : null}
              {installProgress(p, trans)}
            </span>
          </button>
        </li>
      ))}
    </ul>
    </>
  );
}

export function PipelineDetails(props: { ctx: IPanelContext; id: number }): JSX.Element {
  const { ctx, id } = props;
  const { trans } = ctx;
  useSignal(ctx.model.changed);
  const pipeline = ctx.model.pipelines.get(id);
  const [schema, setSchema] = useState<Record<string, any> | null>(null);
  const [formError, setFormError] = useState<string | null>(null);
  const [doc, setDoc] = useState<{ name: string; text: string } | null>(null);
  const action = useAction();

  useEffect(() => {
    void ctx.model.loadPipeline(id).catch(e => action.setError(errorMessage(e)));
  }, [id]);

  useEffect(() => {
    if (pipeline?.status !== 'READY') {
      return;
    }
    let live = true;
    ctx.api
      .pipelineForm(id)
      .then(s => live && setSchema(s))
      .catch(e => live && setFormError(errorMessage(e)));
    return () => {
      live = false;
    };
  }, [id, pipeline?.status]);

  if (!pipeline) {
    return (
      <EmptyState title={trans.__('This pipeline is not installed (any more)')}>
        <ErrorBanner message={action.error} />
      </EmptyState>
    );
  }

  const neverInstalled = pipeline.status === 'ERROR' && !pipeline.fingerprint;
  const uninstall = async () => {
    const label = [pipeline.name, pipeline.version].filter(Boolean).join(' ');
    // A pipeline that never installed has no image and no runs: only its record goes.
    const ok = neverInstalled
      ? await ctx.host.confirm(
          trans.__('Remove failed install'),
          trans.__('Remove the failed install of %1? Nothing was installed: only this entry and its stored package go.', label),
          trans.__('Remove'),
          true
        )
      : await ctx.host.confirm(
          trans.__('Uninstall pipeline'),
          trans.__('Uninstall %1? Its LXD image is deleted; its past runs are kept.', label),
          trans.__('Uninstall'),
          true
        );
    if (!ok) {
      return;
    }
    const done = await action.run('uninstall', () => ctx.api.uninstallPipeline(id));
    if (done) {
      ctx.host.notify(neverInstalled ? `Removed ${pipeline.name}` : `Pipeline ${pipeline.name} uninstalled`, 'info');
      ctx.router.back();
    }
  };

  const openDocument = async (name: string) => {
    await action.run('doc', async () => {
      const blob = await ctx.api.pipelineDocument(id, name);
      if (/^text\/|json|yaml/.test(blob.type) || /\.(md|txt|rst|ya?ml|json|csv|tsv)$/i.test(name)) {
        setDoc({ name, text: await blob.text() }); // shown as plain text, never as HTML
      } else {
        // PDF, images, HTML...: downloaded, not opened here (a package's HTML or SVG must not
        // run with JupyterLab's origin).
        const link = document.createElement('a');
        link.href = URL.createObjectURL(blob);
        link.download = name;
        link.click();
        setTimeout(() => URL.revokeObjectURL(link.href), 10000);
      }
    });
  };

  const runs = ctx.model.runList('all', id);
  const limits = pipeline.limits && Object.keys(pipeline.limits).length ? pipeline.limits : null;

  return (
    <div className="jp-pirus-details" data-pipeline-id={id}>
      <div className="jp-pirus-details-head">
        <PipelineIcon api={ctx.api} pipeline={pipeline} size={40} />
        <div>
          <h2 className="jp-pirus-details-title" title={pipeline.name}>
            {pipeline.name} {pipeline.version ? <span className="jp-pirus-version">{pipeline.version}</span> : null}
          </h2>
          <StatusBadge status={pipeline.status} />
        </div>
      </div>
      {installProgress(pipeline, trans)}
      <ErrorBanner message={pipeline.status === 'ERROR' ? pipeline.error : null} title={trans.__('Installation failed')} />
      <ErrorBanner message={action.error} onDismiss={() => action.setError(null)} trans={trans} />
      <div className="jp-pirus-toolbar">
        <ActionButton
          label={trans.__('New run')}
          icon={runIcon}
          variant="primary"
          disabled={pipeline.status !== 'READY'}
          onClick={() => ctx.router.show({ kind: 'new-run', pipelineId: id, inputs: ctx.host.selectedFiles() })}
          testId="pirus-pipeline-new-run"
        />
        <ActionButton
          label={neverInstalled ? trans.__('Remove') : trans.__('Uninstall')}
          icon={deleteIcon}
          variant="danger"
          busy={action.busy === 'uninstall'}
          disabled={pipeline.status === 'INSTALLING' || pipeline.status === 'UPLOADING'}
          onClick={() => void uninstall()}
          testId="pirus-pipeline-uninstall"
        />
      </div>
      {pipeline.description ? <Markdown className="jp-pirus-description" text={pipeline.description} /> : null}
      <dl className="jp-pirus-fields">
        <Field label={trans.__('Id')}>{pipeline.id}</Field>
        <Field label={trans.__('License')}>{pipeline.license}</Field>
        <Field label={trans.__('Developers')}>{(pipeline.developers || []).join(', ')}</Field>
        <Field label={trans.__('Pirus API')}>{pipeline.pirus_api}</Field>
        <Field label={trans.__('Package size')}>{formatBytes(pipeline.size)}</Field>
        <Field label={trans.__('Installed')}>{formatTime(pipeline.created)}</Field>
        <Field label={trans.__('Image')}>
          {pipeline.fingerprint ? <code title={pipeline.fingerprint}>{pipeline.fingerprint.slice(0, 12)}</code> : null}
        </Field>
        <Field label={trans.__('Limits')}>
          {limits
            ? Object.entries(limits)
                .map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
                .join(', ')
            : null}
        </Field>
        <Field label={trans.__('Runs')}>{runs.length ? String(runs.length) : null}</Field>
      </dl>
      {pipeline.documents && pipeline.documents.length ? (
        <section className="jp-pirus-section">
          <h3>{trans.__('Documents')}</h3>
          <ul className="jp-pirus-links">
            {pipeline.documents.map(name => (
              <li key={name}>
                <button className="jp-pirus-link" onClick={() => void openDocument(name)}>
                  {name}
                </button>
              </li>
            ))}
          </ul>
          {doc ? (
            <div className="jp-pirus-document">
              <div className="jp-pirus-section-head">
                <strong>{doc.name}</strong>
                <button className="jp-pirus-icon-button" onClick={() => setDoc(null)} aria-label={trans.__('Close document')}>
                  ×
                </button>
              </div>
              <pre>{doc.text}</pre>
            </div>
          ) : null}
        </section>
      ) : null}
      {pipeline.status === 'READY' ? (
        <section className="jp-pirus-section">
          <h3>{trans.__('Form preview')}</h3>
          <ErrorBanner message={formError} />
          {schema && hasFields(schema) ? (
            <div className="jp-pirus-form jp-pirus-form-preview">
              <FormComponent
                translator={ctx.translator}
                schema={schema}
                formData={{}}
                onChange={() => undefined}
                validator={validator as any}
                disabled
                showErrorList={false}
                uiSchema={{ 'ui:submitButtonOptions': { norender: true } }}
                liveValidate={false}
              />
            </div>
          ) : schema ? (
            <p className="jp-pirus-muted">{trans.__('This pipeline has no settings.')}</p>
          ) : null}
        </section>
      ) : null}
    </div>
  );
}

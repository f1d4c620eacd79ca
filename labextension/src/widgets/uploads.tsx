/**
 * Uploads: a drop zone (drag-and-drop or the file chooser, keyboard operable), one progress bar
 * per upload with pause/resume/cancel, uploads a previous page left unfinished, and the input
 * files already uploaded (each can start a new run).
 */
import {
  closeIcon,
  fileUploadIcon,
  runIcon
} from '@jupyterlab/ui-components';
import React, { useRef, useState } from 'react';

import { IPipeline } from '../api';
import { formatBytes } from '../format';
import { IUploadItem, UploadKind } from '../uploads';
import { ActionButton, ErrorBanner, IPanelContext, ProgressBar, useSignal } from './common';

type Trans = IPanelContext['trans'];

type KindChoice = 'auto' | UploadKind;

function itemLabel(trans: Trans, item: IUploadItem, pipeline?: IPipeline, pipelineGone?: boolean): string {
  const size = item.size ?? 0;
  const sent = trans.__('%1 / %2', formatBytes(item.sent), formatBytes(size));
  switch (item.state) {
    case 'done':
      if (item.kind === 'pipeline') {
        if (pipeline?.status === 'READY') {
          return trans.__('installed: %1 %2', pipeline.name, pipeline.version ?? '');
        }
        if (pipeline?.status === 'ERROR') {
          return trans.__('uploaded, but the installation failed');
        }
        if (pipelineGone) {
          return trans.__('uploaded (the pipeline was uninstalled since)');
        }
        return trans.__('uploaded: installing…');
      }
      return item.filePath
        ? trans.__('uploaded (%1) to %2', formatBytes(size), item.filePath)
        : trans.__('uploaded (%1)', formatBytes(size));
    case 'paused':
      return trans.__('paused at %1', sent);
    case 'error':
      return trans.__('failed at %1', sent);
    case 'interrupted':
      return trans.__('interrupted at %1', sent);
    case 'starting':
      return trans.__('starting…');
    default:
      return item.resumed ? trans.__('%1 (resumed)', sent) : sent;
  }
}

function UploadRow(props: { ctx: IPanelContext; item: IUploadItem; onResumeInterrupted: () => void }): JSX.Element {
  const { ctx, item } = props;
  const { trans } = ctx;
  const pipeline = item.pipelineId !== null ? ctx.model.pipelines.get(item.pipelineId) : undefined;
  const installFailed = pipeline?.status === 'ERROR';
  const pipelineGone = item.pipelineId !== null && !pipeline && ctx.model.loaded;
  const fraction = item.size ? item.sent / item.size : item.state === 'done' ? 1 : null;
  const tone =
    item.state === 'error' || installFailed
      ? 'error'
      : item.state === 'done'
        ? 'ok'
        : item.state === 'paused' || item.state === 'interrupted'
          ? 'waiting'
          : 'active';
  return (
    <li className="jp-pirus-list-item jp-pirus-upload" data-upload-state={item.state} data-filename={item.filename}>
      <div className="jp-pirus-upload-head">
        <span className="jp-pirus-name" title={item.filename}>
          {item.filename}
        </span>
        <span className={`jp-pirus-kind jp-pirus-kind-${item.kind}`}>
          {item.kind === 'pipeline' ? trans.__('pipeline') : trans.__('input')}
        </span>
        <span className="jp-pirus-spacer" />
        {item.state === 'uploading' || item.state === 'starting' ? (
          <button className="jp-pirus-button jp-pirus-button-small" onClick={() => ctx.uploads.pause(item.key)}>
            {trans.__('Pause')}
          </button>
        ) : null}
        {item.state === 'paused' || item.state === 'error' ? (
          <button className="jp-pirus-button jp-pirus-button-small" onClick={() => ctx.uploads.resume(item.key)}>
            {item.state === 'error' ? trans.__('Retry') : trans.__('Resume')}
          </button>
        ) : null}
        {item.state === 'interrupted' ? (
          <button className="jp-pirus-button jp-pirus-button-small" onClick={props.onResumeInterrupted}>
            {trans.__('Choose file…')}
          </button>
        ) : null}
        {item.state !== 'done' ? (
          <ActionButton
            label={trans.__('Cancel upload of %1', item.filename)}
            icon={closeIcon}
            iconOnly
            onClick={() => void ctx.uploads.cancel(item.key)}
          />
        ) : null}
      </div>
      <ProgressBar fraction={item.state === 'starting' ? null : fraction} tone={tone} label={itemLabel(trans, item, pipeline, pipelineGone)} />
      {item.state === 'interrupted' ? (
        <div className="jp-pirus-muted">
          {trans.__('Left unfinished by an earlier page: choose the same file again to resume it.')}
        </div>
      ) : null}
      {item.error ? <div className="jp-pirus-row-error">{item.error}</div> : null}
      {installFailed && pipeline?.error ? <div className="jp-pirus-row-error">{pipeline.error}</div> : null}
      {pipeline?.status === 'READY' ? (
        <button className="jp-pirus-link" onClick={() => ctx.router.show({ kind: 'pipeline', id: pipeline.id })}>
          {trans.__('Show pipeline')}
        </button>
      ) : null}
    </li>
  );
}

export function UploadArea(props: { ctx: IPanelContext }): JSX.Element {
  const { ctx } = props;
  const { trans } = ctx;
  useSignal(ctx.uploads.changed);
  useSignal(ctx.model.changed);
  const input = useRef<HTMLInputElement>(null);
  const [kind, setKind] = useState<KindChoice>('auto');
  const [dragging, setDragging] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const start = (files: FileList | File[] | null) => {
    if (!files || !files.length) {
      return;
    }
    setError(null);
    for (const file of Array.from(files)) {
      ctx.uploads.add(file, kind === 'auto' ? undefined : kind).catch(e => setError(String(e)));
    }
  };

  const choose = () => input.current?.click();

  const items = ctx.uploads.items;
  const finished = items.some(i => i.state === 'done' || i.state === 'error');
  const files = ctx.model.uploadedFiles();

  return (
    <div className="jp-pirus-uploads">
      <div
        className={`jp-pirus-dropzone${dragging ? ' jp-mod-dragging' : ''}`}
        role="button"
        tabIndex={0}
        aria-label={trans.__('Upload files: drop them here or press Enter to choose')}
        data-testid="pirus-dropzone"
        onClick={choose}
        onKeyDown={e => {
          if (e.key === 'Enter' || e.key === ' ') {
            e.preventDefault();
            choose();
          }
        }}
        onDragEnter={e => {
          e.preventDefault();
          e.stopPropagation();
          setDragging(true);
        }}
        onDragOver={e => {
          e.preventDefault();
          e.stopPropagation();
          e.dataTransfer.dropEffect = 'copy';
          setDragging(true);
        }}
        onDragLeave={e => {
          e.stopPropagation();
          setDragging(false);
        }}
        onDrop={e => {
          e.preventDefault();
          e.stopPropagation();
          setDragging(false);
          start(e.dataTransfer.files);
        }}
      >
        <fileUploadIcon.react tag="span" className="jp-pirus-dropzone-icon" />
        <span className="jp-pirus-dropzone-text">
          {trans.__('Drop pipeline packages or input files here, or')} <u>{trans.__('choose files')}</u>
        </span>
        <span className="jp-pirus-muted">
          {trans.__('Resumable: a paused or interrupted upload continues where it stopped.')}
        </span>
        <input
          ref={input}
          type="file"
          multiple
          hidden
          data-testid="pirus-file-input"
          onChange={e => {
            start(e.currentTarget.files);
            e.currentTarget.value = '';
          }}
        />
      </div>
      <label className="jp-pirus-block-field">
        <span>{trans.__('Upload as')}</span>
        <select
          className="jp-pirus-select"
          value={kind}
          onChange={e => setKind(e.currentTarget.value as KindChoice)}
          data-testid="pirus-upload-kind"
        >
          <option value="auto">{trans.__('by file name (.tar.gz = pipeline)')}</option>
          <option value="pipeline">{trans.__('pipeline package')}</option>
          <option value="input">{trans.__('input file')}</option>
        </select>
      </label>
      <ErrorBanner message={error} onDismiss={() => setError(null)} trans={trans} />
      {items.length ? (
        <section className="jp-pirus-section">
          <div className="jp-pirus-section-head">
            <h3>{trans.__('Transfers')}</h3>
            {finished ? (
              <button className="jp-pirus-link" onClick={() => ctx.uploads.clearFinished()}>
                {trans.__('Clear finished')}
              </button>
            ) : null}
          </div>
          <ul className="jp-pirus-list" aria-label={trans.__('Uploads')}>
            {items.map(item => (
              <UploadRow key={item.key} ctx={ctx} item={item} onResumeInterrupted={choose} />
            ))}
          </ul>
        </section>
      ) : null}
      <section className="jp-pirus-section">
        <h3>{trans.__('Uploaded input files')}</h3>
        {files.length ? (
          <ul className="jp-pirus-list jp-pirus-files" aria-label={trans.__('Uploaded input files')}>
            {files.map(f => (
              <li key={f.id} className="jp-pirus-list-item jp-pirus-file" data-file-path={f.path}>
                <button className="jp-pirus-link jp-pirus-name" title={trans.__('Open %1', f.path)} onClick={() => ctx.host.openFile(f.path)}>
                  {f.name}
                </button>
                <span className="jp-pirus-muted">{formatBytes(f.size)}</span>
                <span className="jp-pirus-spacer" />
                <ActionButton
                  label={trans.__('New run with %1', f.name)}
                  icon={runIcon}
                  iconOnly
                  onClick={() => ctx.router.show({ kind: 'new-run', inputs: [f.path] })}
                />
              </li>
            ))}
          </ul>
        ) : (
          <p className="jp-pirus-muted">{trans.__('No input file uploaded yet.')}</p>
        )}
      </section>
    </div>
  );
}

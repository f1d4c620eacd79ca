/**
 * Small building blocks shared by the panel's views.
 */
import { ITranslator, nullTranslator, TranslationBundle } from '@jupyterlab/translation';
import { LabIcon } from '@jupyterlab/ui-components';
import { ISignal } from '@lumino/signaling';
import React, { useEffect, useReducer, useState } from 'react';

import { PirusAPI } from '../api';
import { EventStream } from '../events';
import { progressFraction, statusTone } from '../format';
import { PirusModel } from '../model';
import { Router } from '../router';
import { UploadManager } from '../uploads';

/** What the views need from JupyterLab (kept behind an interface so they stay simple). */
export interface IHost {
  /** Open a file (path relative to the Jupyter root) in JupyterLab. */
  openFile(path: string): void;
  /** Show a folder in the file browser. */
  showInFileBrowser(path: string): void;
  /** Root-relative paths of the files selected in the file browser. */
  selectedFiles(): string[];
  copyToClipboard(text: string): void;
  insertIntoNotebook(code: string): Promise<void>;
  confirm(title: string, body: string, accept: string, danger?: boolean): Promise<boolean>;
  notify(message: string, type?: 'info' | 'success' | 'warning' | 'error'): void;
}

/** The panel's settings (schema/plugin.json, in JupyterLab's Settings Editor). */
export interface IPanelSettings {
  notifyRunEnd: boolean;
  logLines: number;
  restoreView: boolean;
}

export const DEFAULT_SETTINGS: IPanelSettings = { notifyRunEnd: true, logLines: 200, restoreView: true };

export interface IPanelContext {
  api: PirusAPI;
  model: PirusModel;
  uploads: UploadManager;
  events: EventStream;
  router: Router;
  host: IHost;
  /** Read when used: the Settings Editor changes it in place. */
  settings: IPanelSettings;
  /** The panel's strings, translated (JupyterLab's language packs). */
  trans: TranslationBundle;
  /** JupyterLab's translator, for its own components' strings (the forms' buttons). */
  translator?: ITranslator;
}

export const NULL_TRANS: TranslationBundle = nullTranslator.load('pirus_jupyter');

/** Re-render whenever the signal fires. */
export function useSignal(signal: ISignal<any, any>): void {
  const [, bump] = useReducer((x: number) => x + 1, 0);
  useEffect(() => {
    const slot = () => bump();
    signal.connect(slot);
    return () => {
      signal.disconnect(slot);
    };
  }, [signal]);
}

/** The current time, ticking every `interval` ms while `active`. */
export function useNow(active: boolean, interval = 1000): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (!active) {
      return;
    }
    const timer = setInterval(() => setNow(Date.now()), interval);
    return () => clearInterval(timer);
  }, [active, interval]);
  return active ? now : Date.now();
}

export function StatusBadge(props: { status: string }): JSX.Element {
  return (
    <span
      className={`jp-pirus-status jp-pirus-status-${statusTone(props.status)}`}
      data-status={props.status}
    >
      {props.status}
    </span>
  );
}

/** A progress bar; `fraction === null` draws an indeterminate (animated) bar. */
export function ProgressBar(props: {
  fraction: number | null;
  label?: string;
  tone?: string;
  title?: string;
}): JSX.Element {
  const { fraction, label, tone } = props;
  const percent = fraction === null ? undefined : Math.round(fraction * 100);
  return (
    <div className="jp-pirus-progress-wrap" title={props.title ?? label}>
      <div
        className={`jp-pirus-progress jp-pirus-progress-${tone ?? 'active'}${
          fraction === null ? ' jp-pirus-progress-indeterminate' : ''
        }`}
        role="progressbar"
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={percent}
        aria-valuetext={label}
      >
        <div
          className="jp-pirus-progress-fill"
          style={fraction === null ? undefined : { width: `${(fraction * 100).toFixed(1)}%` }}
        />
      </div>
      {label ? <span className="jp-pirus-progress-label">{label}</span> : null}
    </div>
  );
}

export { progressFraction };

export function ErrorBanner(props: {
  message: string | null | undefined;
  onDismiss?: () => void;
  title?: string;
  trans?: TranslationBundle;
}): JSX.Element | null {
  if (!props.message) {
    return null;
  }
  const trans = props.trans ?? NULL_TRANS;
  return (
    <div className="jp-pirus-error" role="alert">
      <div className="jp-pirus-error-text">
        {props.title ? <strong>{props.title}: </strong> : null}
        {props.message}
      </div>
      {props.onDismiss ? (
        <button
          className="jp-pirus-icon-button"
          onClick={props.onDismiss}
          title={trans.__('Dismiss')}
          aria-label={trans.__('Dismiss error')}
        >
          ×
        </button>
      ) : null}
    </div>
  );
}

export function EmptyState(props: { title: string; children?: React.ReactNode; icon?: LabIcon }): JSX.Element {
  return (
    <div className="jp-pirus-empty">
      {props.icon ? <props.icon.react tag="div" className="jp-pirus-empty-icon" /> : null}
      <div className="jp-pirus-empty-title">{props.title}</div>
      {props.children ? <div className="jp-pirus-empty-body">{props.children}</div> : null}
    </div>
  );
}

/** A button with an icon and a text label (or only an icon with an accessible label). */
export function ActionButton(props: {
  label: string;
  icon?: LabIcon;
  onClick: () => void;
  disabled?: boolean;
  iconOnly?: boolean;
  variant?: 'primary' | 'danger' | 'default';
  busy?: boolean;
  className?: string;
  testId?: string;
}): JSX.Element {
  const { label, icon, iconOnly, variant = 'default' } = props;
  return (
    <button
      type="button"
      className={`jp-pirus-button jp-pirus-button-${variant}${iconOnly ? ' jp-pirus-button-icon' : ''}${
        props.className ? ' ' + props.className : ''
      }`}
      onClick={props.onClick}
      disabled={props.disabled || props.busy}
      title={label}
      aria-label={label}
      aria-busy={props.busy || undefined}
      data-testid={props.testId}
    >
      {icon ? <icon.react tag="span" className="jp-pirus-button-glyph" /> : null}
      {iconOnly ? null : <span>{label}</span>}
    </button>
  );
}

export function Field(props: { label: string; children: React.ReactNode }): JSX.Element | null {
  if (props.children === null || props.children === undefined || props.children === '') {
    return null;
  }
  return (
    <>
      <dt>{props.label}</dt>
      <dd>{props.children}</dd>
    </>
  );
}

/** Run an async action, remembering "busy" and the error message for display. */
export function useAction(): {
  busy: string | null;
  error: string | null;
  setError: (e: string | null) => void;
  run: (name: string, action: () => Promise<unknown>) => Promise<boolean>;
} {
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const run = async (name: string, action: () => Promise<unknown>): Promise<boolean> => {
    setBusy(name);
    setError(null);
    try {
      await action();
      return true;
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
      return false;
    } finally {
      setBusy(null);
    }
  };
  return { busy, error, setError, run };
}

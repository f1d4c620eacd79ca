/**
 * Pure helpers for what the panel shows: sizes, durations, progress, status groups.
 */
import { FINAL_RUN_STATUSES, IProgress, IRun, RunAction, RunStatus } from './api';

export function formatBytes(size: number | null | undefined): string {
  if (size === null || size === undefined || !isFinite(size)) {
    return '';
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = size;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** `42s`, `3m 05s`, `2h 07m`, `1d 3h`. */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds) || seconds < 0) {
    return '';
  }
  const s = Math.floor(seconds);
  if (s < 60) {
    return `${s}s`;
  }
  const m = Math.floor(s / 60);
  if (m < 60) {
    return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  }
  const h = Math.floor(m / 60);
  if (h < 24) {
    return `${h}h ${String(m % 60).padStart(2, '0')}m`;
  }
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

export function parseTime(iso: string | null | undefined): number | null {
  if (!iso) {
    return null;
  }
  const t = Date.parse(iso);
  return isNaN(t) ? null : t;
}

export function isFinal(status: RunStatus): boolean {
  return FINAL_RUN_STATUSES.has(status);
}

/**
 * Seconds the run has been running (start to end, or to now), paused time left out, or
 * waiting when it has not started yet (created to now).
 */
export function runElapsed(run: IRun, now: number = Date.now()): { seconds: number | null; waiting: boolean } {
  const start = parseTime(run.start);
  const end = parseTime(run.end);
  if (start !== null) {
    // The clock stops while the run is paused (the server says since when).
    const stop = end ?? parseTime(run.paused_since) ?? now;
    const paused = typeof run.paused_seconds === 'number' ? run.paused_seconds : 0;
    return { seconds: Math.max(0, (stop - start) / 1000 - paused), waiting: false };
  }
  const created = parseTime(run.created);
  if (created !== null && !isFinal(run.status)) {
    return { seconds: Math.max(0, (now - created) / 1000), waiting: true };
  }
  return { seconds: null, waiting: false };
}

export function elapsedLabel(run: IRun, now: number = Date.now()): string {
  const { seconds, waiting } = runElapsed(run, now);
  if (seconds === null) {
    return '';
  }
  return waiting ? `queued ${formatDuration(seconds)}` : formatDuration(seconds);
}

/**
 * The progress as a fraction in [0, 1], or null when it is unknown (indeterminate).
 * A finished run is complete whatever it reported.
 */
export function progressFraction(progress: IProgress | null | undefined, status?: RunStatus): number | null {
  if (status === 'DONE') {
    return 1;
  }
  if (!progress) {
    return null;
  }
  const min = typeof progress.min === 'number' ? progress.min : 0;
  const max = typeof progress.max === 'number' ? progress.max : 100;
  const value = typeof progress.value === 'number' ? progress.value : null;
  if (value === null || max <= min) {
    return null;
  }
  return Math.min(1, Math.max(0, (value - min) / (max - min)));
}

/** `step 3 (30%)`, `45%`. */
export function progressLabel(progress: IProgress | null | undefined, status?: RunStatus): string {
  const fraction = progressFraction(progress, status);
  const percent = fraction === null ? '' : `${Math.round(fraction * 100)}%`;
  const label = progress?.label ? String(progress.label) : '';
  // A label that already says a percentage ("x.fastq.gz 100%") is not repeated.
  if (label && percent && !/\d\s*%/.test(label)) {
    return `${label} (${percent})`;
  }
  return label || percent;
}

/** Which actions the run's state machine allows (mirrors the server's transition table). */
export function allowedActions(status: RunStatus): Set<RunAction | 'delete'> {
  const out = new Set<RunAction | 'delete'>();
  if (status === 'RUNNING') {
    out.add('pause');
  }
  if (status === 'PAUSE') {
    out.add('resume');
  }
  if (['WAITING', 'INITIALIZING', 'RUNNING', 'PAUSE', 'FINISHING'].includes(status)) {
    out.add('cancel');
  }
  if (isFinal(status)) {
    out.add('delete');
  }
  return out;
}

/** A CSS modifier for a status (one colour family per group). */
export function statusTone(status: string): 'ok' | 'error' | 'active' | 'waiting' | 'muted' {
  switch (status) {
    case 'DONE':
    case 'READY':
      return 'ok';
    case 'ERROR':
      return 'error';
    case 'RUNNING':
    case 'INITIALIZING':
    case 'FINISHING':
    case 'INSTALLING':
    case 'UPLOADING':
      return 'active';
    case 'WAITING':
    case 'PAUSE':
      return 'waiting';
    default:
      return 'muted';
  }
}

export type RunFilter = 'all' | 'active' | 'final' | RunStatus;

export function matchesFilter(run: IRun, filter: RunFilter): boolean {
  if (filter === 'all') {
    return true;
  }
  if (filter === 'active') {
    return !isFinal(run.status);
  }
  if (filter === 'final') {
    return isFinal(run.status);
  }
  return run.status === filter;
}

export function formatTime(iso: string | null | undefined): string {
  const t = parseTime(iso);
  if (t === null) {
    return '';
  }
  return new Date(t).toLocaleString();
}

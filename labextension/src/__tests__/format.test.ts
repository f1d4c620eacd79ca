import { describe, expect, it } from 'vitest';

import { IRun } from '../api';
import {
  allowedActions,
  elapsedLabel,
  formatBytes,
  formatDuration,
  matchesFilter,
  progressFraction,
  progressLabel,
  runElapsed,
  statusTone
} from '../format';

function run(fields: Partial<IRun>): IRun {
  return {
    id: 1,
    pipeline_id: 1,
    pipeline_name: 'count',
    pipeline_version: '1.0',
    pipeline_fingerprint: null,
    name: 'r',
    config: {},
    inputs: [],
    outputs: [],
    start: null,
    end: null,
    status: 'WAITING',
    progress: null,
    exit_code: null,
    error: null,
    created: null,
    metrics: null,
    location: null,
    target: null,
    paused_seconds: 0,
    paused_since: null,
    ...fields
  };
}

describe('format', () => {
  it('formats sizes', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1023)).toBe('1023 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(20 * 1024 * 1024)).toBe('20 MiB');
    expect(formatBytes(null)).toBe('');
  });

  it('formats durations', () => {
    expect(formatDuration(5.7)).toBe('5s');
    expect(formatDuration(65)).toBe('1m 05s');
    expect(formatDuration(3 * 3600 + 7 * 60)).toBe('3h 07m');
    expect(formatDuration(50 * 3600)).toBe('2d 2h');
    expect(formatDuration(null)).toBe('');
  });

  it('computes progress fractions and labels', () => {
    expect(progressFraction({ value: 5, max: 25 })).toBeCloseTo(0.2);
    expect(progressFraction({ value: 3, min: 1, max: 5 })).toBeCloseTo(0.5);
    expect(progressFraction({ value: 50 })).toBeCloseTo(0.5);
    expect(progressFraction({ value: 99, max: 10 })).toBe(1);
    expect(progressFraction({ label: 'x' })).toBeNull();
    expect(progressFraction(null)).toBeNull();
    expect(progressFraction(null, 'DONE')).toBe(1);
    expect(progressLabel({ value: 5, max: 25, label: 'step 5' })).toBe('step 5 (20%)');
    expect(progressLabel({ value: 1, max: 4 })).toBe('25%');
    expect(progressLabel(null)).toBe('');
    // the pipeline's own label already has the percentage: not said twice
    expect(progressLabel({ value: 100, max: 100, label: 'x.fastq.gz 100%' })).toBe('x.fastq.gz 100%');
    expect(progressLabel({ value: 40, max: 100, label: 'reads 40 %' })).toBe('reads 40 %');
  });

  it('mirrors the run state machine for actions', () => {
    expect([...allowedActions('RUNNING')].sort()).toEqual(['cancel', 'pause']);
    expect([...allowedActions('PAUSE')].sort()).toEqual(['cancel', 'resume']);
    expect([...allowedActions('WAITING')]).toEqual(['cancel']);
    expect([...allowedActions('FINISHING')]).toEqual(['cancel']);
    expect([...allowedActions('DONE')]).toEqual(['delete']);
    expect([...allowedActions('CANCELED')]).toEqual(['delete']);
  });

  it('computes elapsed time of running, finished and queued runs', () => {
    const now = Date.parse('2024-01-01T00:10:00Z');
    const running = run({ status: 'RUNNING', start: '2024-01-01T00:08:30.000+00:00' });
    expect(runElapsed(running, now)).toEqual({ seconds: 90, waiting: false });
    expect(elapsedLabel(running, now)).toBe('1m 30s');
    const done = run({ status: 'DONE', start: '2024-01-01T00:00:00Z', end: '2024-01-01T00:00:42Z' });
    expect(elapsedLabel(done, now)).toBe('42s');
    const queued = run({ status: 'WAITING', created: '2024-01-01T00:09:50Z' });
    expect(elapsedLabel(queued, now)).toBe('queued 10s');
    expect(elapsedLabel(run({ status: 'CANCELED', created: '2024-01-01T00:09:50Z' }), now)).toBe('');
    // paused since 00:01:00 after 20 s of an earlier pause: the clock stopped at 40 s
    const paused = run({
      status: 'PAUSE',
      start: '2024-01-01T00:00:00Z',
      paused_seconds: 20,
      paused_since: '2024-01-01T00:01:00Z'
    });
    expect(elapsedLabel(paused, now)).toBe('40s');
    expect(elapsedLabel({ ...paused, status: 'RUNNING', paused_since: null, paused_seconds: 30 }, now)).toBe('9m 30s');
  });

  it('filters runs by status group', () => {
    expect(matchesFilter(run({ status: 'RUNNING' }), 'active')).toBe(true);
    expect(matchesFilter(run({ status: 'DONE' }), 'active')).toBe(false);
    expect(matchesFilter(run({ status: 'DONE' }), 'final')).toBe(true);
    expect(matchesFilter(run({ status: 'ERROR' }), 'ERROR')).toBe(true);
    expect(matchesFilter(run({ status: 'ERROR' }), 'DONE')).toBe(false);
    expect(matchesFilter(run({ status: 'ERROR' }), 'all')).toBe(true);
  });

  it('maps statuses to tones', () => {
    expect(statusTone('READY')).toBe('ok');
    expect(statusTone('ERROR')).toBe('error');
    expect(statusTone('INSTALLING')).toBe('active');
    expect(statusTone('PAUSE')).toBe('waiting');
    expect(statusTone('CANCELED')).toBe('muted');
  });
});

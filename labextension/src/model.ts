/**
 * The panel's state: pipelines, runs and files, loaded once over REST and then kept current by
 * the events websocket (`applyEvent`). A full `refresh()` follows every (re)connection, because
 * events sent while the socket was down are lost.
 *
 * Ordering: a REST answer can be older than an event that arrived while it was in flight (an
 * install finishing, a fast run ending). So events received during a `refresh()` are applied
 * again over its snapshot, and a single record read or returned by an action is only applied
 * (`applyRecord`) if no event about it arrived since the request started.
 */
import { ISignal, Signal } from '@lumino/signaling';

import {
  errorMessage,
  IFileRecord,
  IPipeline,
  IPirusEvent,
  IRun,
  PirusAPI
} from './api';
import { isFinal, matchesFilter, RunFilter } from './format';

export const RUNS_PAGE = 200;

export class PirusModel {
  constructor(readonly api: PirusAPI) {}

  readonly pipelines = new Map<number, IPipeline>();
  readonly runs = new Map<number, IRun>();
  readonly files = new Map<number, IFileRecord>();

  /** The error of the last full load, shown at the top of the panel. */
  loadError: string | null = null;
  loading = false;
  loaded = false;
  /** Total runs on the server (the list holds the newest {@link RUNS_PAGE}). */
  runsTotal = 0;

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** A run moved into DONE, ERROR or CANCELED (seen live or across a reconnection). */
  get runFinished(): ISignal<this, IRun> {
    return this._runFinished;
  }

  /** Reload everything; keeps the previous state (and reports the error) if it fails. */
  async refresh(): Promise<void> {
    const generation = ++this._generation;
    const during: IPirusEvent[] = [];
    this._recordings.add(during);
    this.loading = true;
    this._changed.emit();
    try {
      const [pipelines, runs, files] = await Promise.all([
        this.api.pipelines(),
        this.api.runs({ limit: RUNS_PAGE }),
        // The panel offers uploaded files only: the newest thousand, however many outputs.
        this.api.files({ source: 'upload', order: 'desc', limit: 1000 })
      ]);
      if (generation !== this._generation) {
        return; // a newer refresh superseded this one
      }
      const previous = new Map(this.runs);
      replace(this.pipelines, pipelines);
      replace(this.runs, runs.items);
      replace(this.files, files.items);
      this.runsTotal = runs.total;
      this.loadError = null;
      this.loaded = true;
      if (this._notifyAcrossRefresh) {
        for (const run of runs.items) {
          const before = previous.get(run.id);
          if (before && !isFinal(before.status) && isFinal(run.status)) {
            this._finished(run);
          }
        }
      }
      // The snapshot may predate events that arrived meanwhile: they win.
      for (const event of during) {
        this._apply(event);
      }
    } catch (error) {
      if (generation === this._generation) {
        this.loadError = errorMessage(error);
      }
    } finally {
      this._recordings.delete(during);
      if (generation === this._generation) {
        this.loading = false;
        this._changed.emit();
      }
    }
  }

  /** A mark to pass to {@link applyRecord} for a request about to be sent. */
  mark(): number {
    return this._serial;
  }

  /**
   * Apply a record read or returned by the API, unless an event about it arrived after `since`
   * (then the record is older than what the model has). Returns whether it was applied.
   */
  applyRecord(kind: 'run' | 'pipeline', data: IRun | IPipeline, since: number): boolean {
    if ((this._touched.get(`${kind}:${data.id}`) ?? 0) > since) {
      return false;
    }
    return this.applyEvent({ type: `${kind}.updated`, data });
  }

  /** Apply one websocket event. Returns false for events the model does not track. */
  applyEvent(event: IPirusEvent): boolean {
    const applied = this._apply(event);
    if (applied) {
      for (const recording of this._recordings) {
        recording.push(event);
      }
      this._changed.emit();
    }
    return applied;
  }

  private _apply(event: IPirusEvent): boolean {
    const data = event.data || {};
    const kind = event.type.split('.')[0];
    if (data.id !== undefined && ['run', 'pipeline', 'file'].includes(kind)) {
      this._touched.set(`${kind}:${data.id}`, ++this._serial);
    }
    switch (event.type) {
      case 'pipeline.created':
      case 'pipeline.updated':
        this.pipelines.set(data.id, { ...(this.pipelines.get(data.id) || {}), ...data });
        break;
      case 'pipeline.deleted':
        this.pipelines.delete(data.id);
        break;
      case 'run.created':
      case 'run.updated': {
        const before = this.runs.get(data.id);
        const run: IRun = { ...(before || {}), ...data };
        this.runs.set(run.id, run);
        if (!before && event.type === 'run.created') {
          this.runsTotal++;
        }
        this.runsTotal = Math.max(this.runsTotal, this.runs.size);
        if (before && !isFinal(before.status) && isFinal(run.status)) {
          this._finished(run);
        }
        break;
      }
      case 'run.deleted':
        if (this.runs.delete(data.id)) {
          this.runsTotal = Math.max(0, this.runsTotal - 1);
        }
        for (const [id, file] of this.files) {
          if (file.run_id === data.id) {
            this.files.delete(id);
          }
        }
        break;
      case 'file.created':
        this.files.set(data.id, data);
        break;
      case 'file.deleted':
        this.files.delete(data.id);
        break;
      default:
        return false;
    }
    return true;
  }

  /** Signal a run's end once, however many times (events, replays, refreshes) it is seen. */
  private _finished(run: IRun): void {
    if (!this._notified.has(run.id)) {
      this._notified.add(run.id);
      this._runFinished.emit(run);
    }
  }

  /** Whether a refresh should report runs that ended while the socket was down. */
  set notifyAcrossRefresh(value: boolean) {
    this._notifyAcrossRefresh = value;
  }

  /** Pipelines, newest first. */
  pipelineList(): IPipeline[] {
    return [...this.pipelines.values()].sort((a, b) => b.id - a.id);
  }

  readyPipelines(): IPipeline[] {
    return this.pipelineList().filter(p => p.status === 'READY');
  }

  /** Runs, newest first, optionally filtered. */
  runList(filter: RunFilter = 'all', pipelineId?: number): IRun[] {
    return [...this.runs.values()]
      .filter(r => matchesFilter(r, filter) && (pipelineId === undefined || r.pipeline_id === pipelineId))
      .sort((a, b) => b.id - a.id);
  }

  /** Input files uploaded through Pirus, newest first (candidates for a new run). */
  uploadedFiles(): IFileRecord[] {
    return [...this.files.values()]
      .filter(f => f.source === 'upload')
      .sort((a, b) => b.id - a.id);
  }

  countByStatus(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const run of this.runs.values()) {
      out[run.status] = (out[run.status] || 0) + 1;
    }
    return out;
  }

  /** Fetch one run (details view) and store it (unless an event was newer). */
  async loadRun(id: number): Promise<IRun> {
    const since = this.mark();
    const run = await this.api.run(id);
    this.applyRecord('run', run, since);
    return this.runs.get(id) ?? run;
  }

  async loadPipeline(id: number): Promise<IPipeline> {
    const since = this.mark();
    const pipeline = await this.api.pipeline(id);
    this.applyRecord('pipeline', pipeline, since);
    return this.pipelines.get(id) ?? pipeline;
  }

  private _generation = 0;
  private _serial = 0;
  private _touched = new Map<string, number>();
  private _recordings = new Set<IPirusEvent[]>();
  private _notified = new Set<number>();
  private _notifyAcrossRefresh = true;
  private _changed = new Signal<this, void>(this);
  private _runFinished = new Signal<this, IRun>(this);
}

function replace<T extends { id: number }>(map: Map<number, T>, items: T[]): void {
  map.clear();
  for (const item of items) {
    map.set(item.id, item);
  }
}

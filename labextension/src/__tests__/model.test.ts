import { describe, expect, it } from 'vitest';

import { IRun, PirusAPI } from '../api';
import { PirusModel } from '../model';
import { fakeSettings, json, pathOf } from './helpers';

function makeModel(state: { pipelines: any[]; runs: any[]; files: any[] }) {
  const { settings, requests } = fakeSettings(req => {
    const { path } = pathOf(req.url);
    if (path.endsWith('/pipelines')) {
      return json({ items: state.pipelines, total: state.pipelines.length });
    }
    if (path.endsWith('/runs')) {
      return json({ items: state.runs, total: state.runs.length, limit: 200, offset: 0 });
    }
    if (path.endsWith('/files')) {
      return json({ items: state.files, total: state.files.length });
    }
    return json({ error: { code: 'not_found', message: 'nope' } }, 404);
  });
  return { model: new PirusModel(new PirusAPI(settings)), requests };
}

const RUN = { id: 1, pipeline_id: 1, name: 'a', status: 'RUNNING', progress: { value: 1, max: 4 } };

describe('PirusModel', () => {
  it('loads everything on refresh', async () => {
    const { model } = makeModel({
      pipelines: [{ id: 1, name: 'count', status: 'READY' }, { id: 2, name: 'x', status: 'ERROR' }],
      runs: [RUN, { ...RUN, id: 2, status: 'DONE' }],
      files: [{ id: 5, name: 'r.fastq', path: 'pirus-uploads/r.fastq', source: 'upload' }, { id: 6, source: 'run', run_id: 2 }]
    });
    let changes = 0;
    model.changed.connect(() => changes++);
    await model.refresh();
    expect(model.loaded).toBe(true);
    expect(model.loadError).toBeNull();
    expect(model.pipelineList().map(p => p.id)).toEqual([2, 1]);
    expect(model.readyPipelines().map(p => p.id)).toEqual([1]);
    expect(model.runList('active').map(r => r.id)).toEqual([1]);
    expect(model.runList('all').map(r => r.id)).toEqual([2, 1]);
    expect(model.uploadedFiles().map(f => f.id)).toEqual([5]);
    expect(model.countByStatus()).toEqual({ RUNNING: 1, DONE: 1 });
    expect(changes).toBeGreaterThanOrEqual(2);
  });

  it('asks for the newest uploaded files only, whatever the number of outputs', async () => {
    const { model, requests } = makeModel({ pipelines: [], runs: [], files: [] });
    await model.refresh();
    const files = requests.map(r => pathOf(r.url)).find(p => p.path.endsWith('/files'));
    expect(Object.fromEntries(files!.query)).toMatchObject({ source: 'upload', order: 'desc', limit: '1000' });
  });

  it('reports a failed load and keeps the previous state', async () => {
    const state = { pipelines: [{ id: 1, name: 'count', status: 'READY' }], runs: [], files: [] };
    const { model } = makeModel(state);
    await model.refresh();
    state.pipelines = null as any; // the next answer is broken
    (model.api as any).pipelines = () => Promise.reject(new Error('Cannot reach the Jupyter server'));
    await model.refresh();
    expect(model.loadError).toBe('Cannot reach the Jupyter server');
    expect(model.pipelines.size).toBe(1);
  });

  it('applies events and signals runs that end', async () => {
    const { model } = makeModel({ pipelines: [], runs: [], files: [] });
    await model.refresh();
    const finished: IRun[] = [];
    model.runFinished.connect((_, run) => finished.push(run));

    model.applyEvent({ type: 'run.created', data: { ...RUN, status: 'WAITING' } });
    model.applyEvent({ type: 'run.updated', data: { ...RUN, status: 'RUNNING' } });
    expect(model.runs.get(1)!.status).toBe('RUNNING');
    expect(model.runsTotal).toBe(1);
    expect(finished).toHaveLength(0);
    model.applyEvent({ type: 'run.updated', data: { ...RUN, status: 'DONE' } });
    expect(finished.map(r => r.status)).toEqual(['DONE']);
    // A repeated final event does not notify twice.
    model.applyEvent({ type: 'run.updated', data: { ...RUN, status: 'DONE' } });
    expect(finished).toHaveLength(1);
    // A run first seen already finished is not "news".
    model.applyEvent({ type: 'run.updated', data: { ...RUN, id: 7, status: 'ERROR' } });
    expect(finished).toHaveLength(1);

    model.applyEvent({ type: 'file.created', data: { id: 3, run_id: 1, source: 'run', path: 'o.txt' } });
    model.applyEvent({ type: 'pipeline.created', data: { id: 4, name: 'p', status: 'UPLOADING' } });
    model.applyEvent({ type: 'pipeline.updated', data: { id: 4, status: 'READY' } });
    expect(model.pipelines.get(4)).toMatchObject({ name: 'p', status: 'READY' });
    model.applyEvent({ type: 'run.deleted', data: { id: 1 } });
    expect(model.runs.has(1)).toBe(false);
    expect(model.files.has(3)).toBe(false);
    model.applyEvent({ type: 'pipeline.deleted', data: { id: 4 } });
    expect(model.pipelines.has(4)).toBe(false);
    expect(model.applyEvent({ type: 'upload.updated', data: {} })).toBe(false);
  });

  it('signals runs that ended while disconnected on the next refresh', async () => {
    const state = { pipelines: [], runs: [{ ...RUN }], files: [] };
    const { model } = makeModel(state);
    await model.refresh();
    const finished: number[] = [];
    model.runFinished.connect((_, run) => finished.push(run.id));
    state.runs = [{ ...RUN, status: 'CANCELED' }];
    await model.refresh();
    expect(finished).toEqual([1]);
  });

  it('ignores a refresh superseded by a newer one', async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>(r => (release = r));
    const state = { pipelines: [{ id: 1, name: 'old', status: 'READY' }], runs: [], files: [] };
    const { model } = makeModel(state);
    const api = model.api as any;
    const original = api.pipelines.bind(api);
    let calls = 0;
    api.pipelines = async () => {
      calls++;
      if (calls === 1) {
        await gate;
        return [{ id: 1, name: 'stale', status: 'READY' }];
      }
      return original();
    };
    const first = model.refresh();
    await model.refresh();
    release();
    await first;
    expect(model.pipelines.get(1)!.name).toBe('old');
    expect(model.loading).toBe(false);
  });

  it('does not let a refresh answer older than an event undo it', async () => {
    // The upload finished: a refresh starts, the server answers "INSTALLING"; meanwhile the
    // "READY" event arrived. READY must win.
    let release: () => void = () => undefined;
    const gate = new Promise<void>(r => (release = r));
    const state = { pipelines: [{ id: 1, name: 'count.tar.gz', status: 'INSTALLING' }], runs: [], files: [] };
    const { model } = makeModel(state);
    const api = model.api as any;
    const original = api.pipelines.bind(api);
    api.pipelines = async () => {
      const answer = await original(); // read now: INSTALLING
      await gate; // ...but arrives late
      return answer;
    };
    const refresh = model.refresh();
    await new Promise(r => setTimeout(r, 10));
    model.applyEvent({ type: 'pipeline.updated', data: { id: 1, name: 'count', status: 'READY' } });
    release();
    await refresh;
    expect(model.pipelines.get(1)).toMatchObject({ name: 'count', status: 'READY' });
  });

  it('ignores a single record older than an event about it', async () => {
    const { model } = makeModel({ pipelines: [], runs: [], files: [] });
    await model.refresh();
    const since = model.mark();
    // The run ended (events) while POST /runs was answering WAITING.
    model.applyEvent({ type: 'run.created', data: { ...RUN, id: 4, status: 'WAITING' } });
    model.applyEvent({ type: 'run.updated', data: { ...RUN, id: 4, status: 'DONE' } });
    expect(model.applyRecord('run', { ...RUN, id: 4, status: 'WAITING' } as any, since)).toBe(false);
    expect(model.runs.get(4)!.status).toBe('DONE');
    // Without a newer event, the record is applied.
    const later = model.mark();
    expect(model.applyRecord('run', { ...RUN, id: 4, status: 'DONE', name: 'renamed' } as any, later)).toBe(true);
    expect(model.runs.get(4)!.name).toBe('renamed');
    expect(model.runsTotal).toBe(1);
  });

  it('signals the end of a run once, however it is learnt', async () => {
    const state = { pipelines: [], runs: [{ ...RUN }], files: [] };
    const { model } = makeModel(state);
    await model.refresh();
    const finished: number[] = [];
    model.runFinished.connect((_, run) => finished.push(run.id));
    const since = model.mark();
    model.applyRecord('run', { ...RUN, status: 'CANCELED' } as any, since); // the POST answer
    model.applyEvent({ type: 'run.updated', data: { ...RUN, status: 'CANCELED' } }); // the event
    state.runs = [{ ...RUN, status: 'CANCELED' }];
    await model.refresh();
    expect(finished).toEqual([1]);
  });
});

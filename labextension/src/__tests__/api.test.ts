import { describe, expect, it } from 'vitest';

import { PirusAPI, PirusRequestError, queryString } from '../api';
import { fakeSettings, json, pathOf } from './helpers';

describe('PirusAPI', () => {
  it('builds URLs under the base URL and encodes parts', () => {
    const { settings } = fakeSettings(() => json({}));
    const api = new PirusAPI(settings);
    expect(api.url('pipelines', 3, 'documents', 'READ ME.md')).toBe(
      'http://localhost:8888/lab-base/pirus/api/v1/pipelines/3/documents/READ%20ME.md'
    );
    expect(api.uploadsUrl).toBe('http://localhost:8888/lab-base/pirus/api/v1/uploads');
  });

  it('lists pipelines with the token header', async () => {
    const { settings, requests } = fakeSettings(() =>
      json({ items: [{ id: 1, name: 'count', status: 'READY' }], total: 1 })
    );
    const items = await new PirusAPI(settings).pipelines();
    expect(items).toHaveLength(1);
    expect(items[0].name).toBe('count');
    expect(requests[0].method).toBe('GET');
    expect(pathOf(requests[0].url).path).toBe('/lab-base/pirus/api/v1/pipelines');
    expect(requests[0].headers.get('Authorization')).toBe('token secret-token');
  });

  it('repeats inputs (as base names) in the form query', async () => {
    const { settings, requests } = fakeSettings(() => json({ type: 'object', properties: {} }));
    await new PirusAPI(settings).pipelineForm(7, ['data/a.fastq', 'b.fq']);
    const { path, query } = pathOf(requests[0].url);
    expect(path).toBe('/lab-base/pirus/api/v1/pipelines/7/form');
    expect(query.getAll('inputs')).toEqual(['a.fastq', 'b.fq']);
  });

  it('joins the status filter of runs', async () => {
    const { settings, requests } = fakeSettings(() => json({ items: [], total: 0 }));
    await new PirusAPI(settings).runs({ status: ['RUNNING', 'PAUSE'], pipelineId: 2, limit: 20 });
    const { query } = pathOf(requests[0].url);
    expect(query.get('status')).toBe('RUNNING,PAUSE');
    expect(query.get('pipeline_id')).toBe('2');
    expect(query.get('limit')).toBe('20');
  });

  it('posts a run with config, inputs and a trimmed name', async () => {
    const { settings, requests } = fakeSettings(() => json({ id: 9, status: 'WAITING' }, 201));
    const api = new PirusAPI(settings);
    const run = await api.createRun({
      pipeline_id: 1,
      config: { min_length: 5 },
      inputs: ['pirus-uploads/r.fastq'],
      name: '  my run '
    });
    expect(run.id).toBe(9);
    expect(requests[0].method).toBe('POST');
    expect(JSON.parse(requests[0].body!)).toEqual({
      pipeline_id: 1,
      config: { min_length: 5 },
      inputs: ['pirus-uploads/r.fastq'],
      name: 'my run'
    });
    await api.createRun({ pipeline_id: 1, name: '   ' });
    expect(JSON.parse(requests[1].body!)).toEqual({ pipeline_id: 1, config: {}, inputs: [] });
  });

  it('rejects with the server message and the per-field details', async () => {
    const { settings } = fakeSettings(() =>
      json(
        {
          error: {
            code: 'invalid_config',
            message: 'invalid config: min_length: -1 is less than the minimum of 0',
            details: [{ field: 'min_length', message: '-1 is less than the minimum of 0' }]
          }
        },
        400
      )
    );
    const error = await new PirusAPI(settings)
      .createRun({ pipeline_id: 1, config: { min_length: -1 } })
      .catch(e => e);
    expect(error).toBeInstanceOf(PirusRequestError);
    expect(error.status).toBe(400);
    expect(error.code).toBe('invalid_config');
    expect(error.message).toContain('min_length');
    expect(error.fieldErrors).toEqual([{ field: 'min_length', message: '-1 is less than the minimum of 0' }]);
  });

  it('keeps non-JSON errors short', async () => {
    const { settings } = fakeSettings(
      () => new Response('<html><body>Bad gateway</body></html>', { status: 502, statusText: 'Bad Gateway' })
    );
    const error = await new PirusAPI(settings).pipelines().catch(e => e);
    expect(error.status).toBe(502);
    expect(error.message).toBe('502 Bad Gateway');
    expect(error.fieldErrors).toEqual([]);
  });

  it('turns a network failure into a network_error', async () => {
    const { settings } = fakeSettings(() => {
      throw new TypeError('Failed to fetch');
    });
    const error = await new PirusAPI(settings).info().catch(e => e);
    expect(error).toBeInstanceOf(PirusRequestError);
    expect(error.status).toBe(0);
    expect(error.code).toBe('network_error');
    expect(error.message).toMatch(/Cannot reach the Jupyter server/);
  });

  it('handles 204, text logs and missing icons', async () => {
    const { settings, requests } = fakeSettings(req => {
      const { path } = pathOf(req.url);
      if (req.method === 'DELETE') {
        return new Response(null, { status: 204 });
      }
      if (path.endsWith('/logs/out')) {
        return new Response('line 1\nline 2\n', { headers: { 'Content-Type': 'text/plain' } });
      }
      return json({ error: { code: 'not_found', message: 'pipeline 4 has no icon' } }, 404);
    });
    const api = new PirusAPI(settings);
    expect(await api.deleteRun(3)).toBeUndefined();
    expect(await api.runLog(3, 'out', 50)).toBe('line 1\nline 2\n');
    expect(pathOf(requests[1].url).query.get('tail')).toBe('50');
    expect(await api.pipelineIcon(4)).toBeNull();
  });

  it('reads a run lineage and a diff of two runs', async () => {
    const { settings, requests } = fakeSettings(() => json({ run: 4, nodes: [], edges: [], truncated: false }));
    const api = new PirusAPI(settings);
    expect((await api.runLineage(4)).run).toBe(4);
    await api.diffRuns(4, 7);
    expect(requests.map(r => pathOf(r.url).path)).toEqual([
      '/lab-base/pirus/api/v1/runs/4/lineage',
      '/lab-base/pirus/api/v1/runs/4/diff/7'
    ]);
  });

  it('posts run actions', async () => {
    const { settings, requests } = fakeSettings(() => json({ id: 2, status: 'CANCELED' }));
    const run = await new PirusAPI(settings).runAction(2, 'cancel');
    expect(run.status).toBe('CANCELED');
    expect(requests[0].method).toBe('POST');
    expect(pathOf(requests[0].url).path).toBe('/lab-base/pirus/api/v1/runs/2/cancel');
  });
});

describe('queryString', () => {
  it('skips empty values and repeats arrays', () => {
    expect(queryString({ a: 1, b: ['x', 'y'], c: undefined, d: '', e: null })).toBe('?a=1&b=x&b=y');
    expect(queryString({})).toBe('');
  });
});

describe('request timeout', () => {
  it('fails a request the server does not answer, with a clear message', async () => {
    const { settings } = fakeSettings(
      req =>
        new Promise<Response>((_, reject) => {
          // never answers; honours the abort like fetch does
          req.signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
        })
    );
    const api = new PirusAPI(settings, 50);
    const error = await api.pipelines().catch(e => e);
    expect(error).toBeInstanceOf(PirusRequestError);
    expect(error.code).toBe('timeout');
    expect(error.message).toMatch(/did not answer within 0 s \(GET pipelines\)/);
    expect(api.pending.size).toBe(0);
  });
});

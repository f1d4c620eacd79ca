import { describe, expect, it } from 'vitest';

import { FINAL_RUN_STATUSES, RUN_STATUSES, RUN_STATUS_VALUES } from '../api';

describe('generated schema', () => {
  it('lists every run status once in the runs filter order', () => {
    expect(new Set(RUN_STATUSES).size).toBe(RUN_STATUSES.length);
    expect([...RUN_STATUSES].sort()).toEqual([...RUN_STATUS_VALUES].sort());
  });

  it('takes the final run statuses from the state machine', () => {
    expect([...FINAL_RUN_STATUSES].sort()).toEqual(['CANCELED', 'DONE', 'ERROR']);
  });
});

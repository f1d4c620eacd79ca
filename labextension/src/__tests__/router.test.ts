import { describe, expect, it } from 'vitest';

import { Router } from '../router';

describe('Router', () => {
  it('stacks views over the tabs and goes back', () => {
    const router = new Router();
    let changes = 0;
    router.changed.connect(() => changes++);
    expect(router.view).toEqual({ kind: 'list' });
    router.show({ kind: 'run', id: 3 });
    expect(router.tab).toBe('runs');
    router.show({ kind: 'new-run', inputs: ['a'] });
    router.show({ kind: 'new-run', inputs: ['b'] }); // replaces the form on top
    expect(router.depth).toBe(2);
    router.back();
    expect(router.view).toEqual({ kind: 'run', id: 3 });
    router.setTab('uploads');
    expect(router.view).toEqual({ kind: 'list' });
    expect(router.tab).toBe('uploads');
    expect(changes).toBe(5);
  });
});

describe('router snapshots', () => {
  it('restores the tab and the views, and ignores what is not a snapshot', () => {
    const router = new Router();
    router.show({ kind: 'run', id: 7 });
    const saved = JSON.parse(JSON.stringify(router.snapshot()));
    const again = new Router();
    again.restore(saved);
    expect(again.tab).toBe('runs');
    expect(again.view).toEqual({ kind: 'run', id: 7 });
    again.restore({ tab: 'nowhere', stack: [] });
    again.restore(null);
    again.restore({ tab: 'uploads', stack: [{ kind: 'bogus' }] });
    expect(again.tab).toBe('uploads');
    expect(again.view).toEqual({ kind: 'list' });
  });
});

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { ISideSplit, PanelWidthKeeper } from '../width';

function setup(saved: unknown, initial = 250) {
  const store = { saved, saves: [] as number[] };
  const moves: number[] = [];
  let width = initial;
  const split: ISideSplit = {
    move: w => {
      moves.push(w);
      width = w;
    }
  };
  const keeper = new PanelWidthKeeper({
    store: {
      fetch: async () => store.saved,
      save: async (_key, value) => {
        store.saves.push(value.width);
        store.saved = value;
      }
    },
    key: 'k',
    measure: () => width,
    findSplit: () => split,
    delay: 100
  });
  return { keeper, store, moves, setWidth: (w: number) => (width = w) };
}

describe('PanelWidthKeeper', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('moves the split to the saved width once, the first time the panel shows', async () => {
    const { keeper, moves, setWidth, store } = setup({ width: 400 }, 0);
    await keeper.load(); // hidden: nothing moved yet
    expect(moves).toEqual([]);
    setWidth(250); // shown at JupyterLab's default width
    keeper.resized();
    expect(moves).toEqual([400]);
    keeper.resized(); // the move's own resize: saved width unchanged, nothing written
    vi.advanceTimersByTime(200);
    expect(store.saves).toEqual([]);
    setWidth(300); // the user's drag from then on is kept, not undone
    keeper.resized();
    expect(moves).toEqual([400]);
    vi.advanceTimersByTime(200);
    expect(store.saves).toEqual([300]);
  });

  it('leaves a width within the tolerance alone and saves drags debounced', async () => {
    const { keeper, moves, setWidth, store } = setup({ width: 401 }, 400);
    await keeper.load();
    expect(moves).toEqual([]);
    for (const w of [410, 430, 450]) {
      setWidth(w);
      keeper.resized();
      vi.advanceTimersByTime(50);
    }
    expect(store.saves).toEqual([]);
    vi.advanceTimersByTime(100);
    expect(store.saves).toEqual([450]); // the last one only
    setWidth(0); // closed: nothing saved
    keeper.resized();
    vi.advanceTimersByTime(200);
    expect(store.saves).toEqual([450]);
  });

  it('ignores resizes before the saved width is known, and a saved value that is not a width', async () => {
    const { keeper, moves, store } = setup({ width: 'wide' }, 320);
    keeper.resized();
    vi.advanceTimersByTime(200);
    expect(store.saves).toEqual([]);
    await keeper.load();
    expect(keeper.saved).toBeNull();
    expect(moves).toEqual([]);
    vi.advanceTimersByTime(200);
    expect(store.saves).toEqual([320]);
  });
});

/**
 * The panel's width, kept across page reloads.
 *
 * JupyterLab (≥ 3.1) saves the side area's share of the window in the workspace whenever the
 * split handle moves, and restores it. But once the side area is closed the saved share is 0,
 * and after a reload the area opens at JupyterLab's default width. So the panel keeps its own
 * width in the state database while it is visible, and the first time it shows after a page
 * load at another width it moves the split handle there, through lumino's public `SplitLayout`
 * API, as a user's drag would (JupyterLab then saves its layout as after a drag).
 */
// Types only: the unit tests run in node, where lumino's DOM modules cannot load.
import type { SplitLayout, SplitPanel, Widget } from '@lumino/widgets';

/** Where the width is kept (IStateDB's two calls). */
export interface IWidthStore {
  fetch(key: string): Promise<unknown>;
  save(key: string, value: { width: number }): Promise<unknown>;
}

/** The side area's split: `move(width)` makes the area holding the panel that wide. */
export interface ISideSplit {
  move(width: number): void;
}

export interface IWidthKeeperOptions {
  store: IWidthStore;
  key: string;
  /** The panel's width now (0 while it is hidden). */
  measure: () => number;
  /** The split holding the side area, or null when there is none (then nothing is restored). */
  findSplit: () => ISideSplit | null;
  /** Saves wait this long after the last resize (a drag resizes many times). */
  delay?: number;
  /** Widths closer than this to the saved one are left as they are. */
  tolerance?: number;
}

export class PanelWidthKeeper {
  constructor(private readonly options: IWidthKeeperOptions) {}

  /** The saved width (null until loaded, or when none is saved). */
  get saved(): number | null {
    return this._saved;
  }

  /** Reads the saved width; the panel's width is checked right after. */
  async load(): Promise<void> {
    try {
      const value = (await this.options.store.fetch(this.options.key)) as { width?: unknown } | undefined;
      const width = value && typeof value.width === 'number' ? value.width : NaN;
      this._saved = Number.isFinite(width) && width > 0 ? width : null;
    } catch (error) {
      console.warn('pirus: panel width not restored', error);
    }
    this._loaded = true;
    this.resized();
  }

  /** Called when the panel's size may have changed (shown, hidden, dragged, window resized). */
  resized(): void {
    const width = Math.round(this.options.measure());
    if (width <= 0 || !this._loaded) {
      // hidden or closed: nothing to keep; before the saved width is known, nothing to compare
      return;
    }
    if (!this._restored) {
      this._restored = true; // once per page load: from then on the user's drags decide
      const tolerance = this.options.tolerance ?? 2;
      if (this._saved !== null && Math.abs(width - this._saved) > tolerance) {
        const split = this.options.findSplit();
        if (split) {
          split.move(this._saved);
          return; // the move resizes the panel again, which saves that width
        }
      }
    }
    this._schedule(width);
  }

  dispose(): void {
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
  }

  private _schedule(width: number): void {
    this._pending = width;
    if (this._timer !== null) {
      clearTimeout(this._timer);
    }
    this._timer = setTimeout(() => {
      this._timer = null;
      const value = this._pending;
      if (value === null || value === this._saved) {
        return;
      }
      this._saved = value;
      void this.options.store
        .save(this.options.key, { width: value })
        .catch(error => console.warn('pirus: panel width not saved', error));
    }, this.options.delay ?? 500);
  }

  private _saved: number | null = null;
  private _loaded = false;
  private _restored = false;
  private _pending: number | null = null;
  private _timer: ReturnType<typeof setTimeout> | null = null;
}

/**
 * The split panel the widget's side area sits in, as an `ISideSplit`: found by walking up the
 * widget's parents (public lumino API) to the first `SplitPanel` (known by its layout's
 * `moveHandle`). JupyterLab's side areas are the first and last widgets of that split;
 * anywhere else, null.
 */
export function sideSplitOf(widget: Widget): ISideSplit | null {
  const isSplit = (w: Widget): w is SplitPanel => typeof (w.layout as SplitLayout | null)?.moveHandle === 'function';
  let child: Widget = widget;
  let parent = widget.parent;
  while (parent && !isSplit(parent)) {
    child = parent;
    parent = parent.parent;
  }
  if (!parent) {
    return null;
  }
  const split = parent;
  const layout = split.layout as SplitLayout;
  const index = split.widgets.indexOf(child);
  const last = split.widgets.length - 1;
  if (index !== 0 && index !== last) {
    return null;
  }
  return {
    move: width => {
      if (index === 0) {
        layout.moveHandle(0, width);
      } else {
        // the handle sits left of the right area: its position is counted from the left
        layout.moveHandle(last - 1, split.node.clientWidth - width - layout.spacing);
      }
    }
  };
}

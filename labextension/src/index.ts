/**
 * The `pirus-jupyter` JupyterLab extension: the "Pirus" left side panel, its palette and
 * file-browser commands, and notifications when runs end.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Clipboard, Dialog, ICommandPalette, Notification, showDialog } from '@jupyterlab/apputils';
import { IDefaultFileBrowser, IFileBrowserFactory } from '@jupyterlab/filebrowser';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStateDB } from '@jupyterlab/statedb';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';

import { IRun, PirusAPI, PirusRequestError, errorMessage } from './api';
import { EventStream } from './events';
import { pirusIcon } from './icons';
import { PirusModel } from './model';
import { Router } from './router';
import { UploadManager } from './uploads';
import { PanelWidthKeeper, sideSplitOf } from './width';
import { DEFAULT_SETTINGS, IHost, IPanelContext, IPanelSettings } from './widgets/common';
import { PirusPanel } from './widgets/panel';

export namespace CommandIDs {
  export const open = 'pirus:open';
  export const openRun = 'pirus:open-run';
  export const newRun = 'pirus:new-run';
  export const runOnSelection = 'pirus:run-on-selection';
  export const installSelection = 'pirus:install-selected-package';
  export const refresh = 'pirus:refresh';
}

const PACKAGE_RE = /\.(tar|tar\.gz|tgz|tar\.xz|txz)$/i;
const PLUGIN_ID = 'pirus-jupyter:plugin';
// The state database key of the panel's open tab and views.
const STATE_KEY = 'pirus-jupyter:panel';
// ...and of its width (src/width.ts).
const WIDTH_KEY = 'pirus-jupyter:panel-width';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Pirus: install pipelines, upload files and follow runs from a side panel.',
  autoStart: true,
  optional: [
    ICommandPalette,
    ILayoutRestorer,
    IFileBrowserFactory,
    IDefaultFileBrowser,
    INotebookTracker,
    ISettingRegistry,
    IStateDB,
    ITranslator
  ],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    browserFactory: IFileBrowserFactory | null,
    defaultBrowser: IDefaultFileBrowser | null,
    notebooks: INotebookTracker | null,
    settingRegistry: ISettingRegistry | null,
    state: IStateDB | null,
    translator: ITranslator | null
  ) => {
    const { commands, shell } = app;
    const trans = (translator ?? nullTranslator).load('pirus_jupyter');
    const panelSettings: IPanelSettings = { ...DEFAULT_SETTINGS };
    const settings = ServerConnection.makeSettings();
    const api = new PirusAPI(settings);
    const model = new PirusModel(api);
    const router = new Router();
    const events = new EventStream({ settings });
    const uploads = new UploadManager({
      endpoint: api.uploadsUrl,
      settings,
      fetchRecord: async url => {
        const id = url.split('/').filter(Boolean).pop() || '';
        try {
          return await api.request('GET', ['uploads', id]);
        } catch (error) {
          if (error instanceof PirusRequestError && error.status >= 400 && error.status < 500) {
            return null;
          }
          throw error;
        }
      }
    });

    const currentBrowser = () => browserFactory?.tracker.currentWidget ?? defaultBrowser ?? null;

    const selectedFiles = (): string[] => {
      const browser = currentBrowser();
      if (!browser) {
        return [];
      }
      return Array.from(browser.selectedItems())
        .filter(item => item.type !== 'directory')
        .map(item => item.path);
    };

    const host: IHost = {
      openFile: path => {
        void commands.execute('docmanager:open', { path }).catch(error =>
          Notification.error(trans.__('Cannot open %1: %2', path, errorMessage(error)), { autoClose: 8000 })
        );
      },
      showInFileBrowser: path => {
        void commands.execute('filebrowser:go-to-path', { path: path || '/' }).catch(() => undefined);
      },
      selectedFiles,
      copyToClipboard: text => Clipboard.copyToSystem(text),
      insertIntoNotebook: async code => {
        let panel: NotebookPanel | null = notebooks?.currentWidget ?? null;
        if (!panel) {
          // With the default kernel named, no "Select Kernel" dialog interrupts.
          const kernelName = app.serviceManager.kernelspecs.specs?.default;
          panel = (await commands.execute('notebook:create-new', kernelName ? { kernelName } : {})) as NotebookPanel;
        }
        if (!panel) {
          throw new Error(trans.__('Cannot open a notebook'));
        }
        await panel.context.ready;
        const notebook = panel.content;
        const active = notebook.activeCell;
        const empty = active && active.model.type === 'code' && active.model.sharedModel.getSource().trim() === '';
        if (!empty) {
          NotebookActions.insertBelow(notebook);
          NotebookActions.changeCellType(notebook, 'code');
        }
        notebook.activeCell?.model.sharedModel.setSource(code);
        shell.activateById(panel.id);
        Notification.info(trans.__('Pirus run code inserted into the notebook'), { autoClose: 4000 });
      },
      confirm: async (title, body, accept, danger = false) => {
        const result = await showDialog({
          title,
          body,
          buttons: [
            Dialog.cancelButton({ label: trans.__('Keep') }),
            danger ? Dialog.warnButton({ label: accept }) : Dialog.okButton({ label: accept })
          ]
        });
        return result.button.accept;
      },
      notify: (message, type = 'info') => {
        Notification.emit(message, type === 'error' ? 'error' : type, { autoClose: 5000 });
      }
    };

    const ctx: IPanelContext = {
      api,
      model,
      uploads,
      events,
      router,
      host,
      settings: panelSettings,
      trans,
      translator: translator ?? nullTranslator
    };
    const panel = new PirusPanel(ctx);
    shell.add(panel, 'left', { rank: 650 });
    if (restorer) {
      restorer.add(panel, 'pirus-panel');
    }

    // Settings first (restoreView decides whether the saved view comes back), then the view.
    const settingsLoaded = settingRegistry
      ? settingRegistry
          .load(PLUGIN_ID)
          .then(loaded => {
            const apply = () => Object.assign(panelSettings, loaded.composite as Partial<IPanelSettings>);
            apply();
            loaded.changed.connect(apply);
          })
          .catch(error => console.warn('pirus: settings not loaded', error))
      : Promise.resolve();
    if (state) {
      void Promise.all([settingsLoaded, app.restored])
        .then(async () => {
          const saved = await state.fetch(STATE_KEY);
          (window as any).pirusJupyter.restoredView = saved; // what came back (tests, debugging)
          if (panelSettings.restoreView) {
            router.restore(saved);
          }
          // Saved on every navigation, from then on (not before: it would overwrite it).
          router.changed.connect(() => void state.save(STATE_KEY, router.snapshot() as any));
        })
        .catch(error => console.warn('pirus: panel state not restored', error));
      // After JupyterLab restored its own layout, so that it does not undo the width set here.
      const width = new PanelWidthKeeper({
        store: state,
        key: WIDTH_KEY,
        measure: () => (panel.isVisible ? panel.node.getBoundingClientRect().width : 0),
        findSplit: () => sideSplitOf(panel)
      });
      if (typeof ResizeObserver !== 'undefined') {
        new ResizeObserver(() => width.resized()).observe(panel.node);
      }
      void app.restored.then(() => width.load());
    }

    // Live updates: events patch the model; every (re)connection re-reads everything.
    events.message.connect((_, event) => {
      model.applyEvent(event);
    });
    events.stateChanged.connect((_, state) => {
      if (state === 'open') {
        void model.refresh();
      }
    });
    events.connect();
    void model.refresh();
    void uploads.loadInterrupted();

    uploads.finished.connect((_, item) => {
      if (item.state === 'error') {
        Notification.error(trans.__('Upload of %1 failed: %2', item.filename, item.error ?? ''), { autoClose: false });
      } else if (item.kind === 'input') {
        Notification.success(trans.__('Uploaded %1', item.filename), { autoClose: 4000 });
      } else {
        Notification.info(trans.__('Uploaded %1: installing the pipeline…', item.filename), { autoClose: 4000 });
      }
      void model.refresh();
    });

    const showPanel = () => {
      shell.activateById(panel.id);
    };

    model.runFinished.connect((_, run: IRun) => {
      if (!panelSettings.notifyRunEnd) {
        return;
      }
      const type = run.status === 'DONE' ? 'success' : run.status === 'ERROR' ? 'error' : 'warning';
      const message =
        run.status === 'DONE'
          ? trans.__('Pirus run “%1” (#%2) finished', run.name, run.id)
          : run.status === 'ERROR'
            ? trans.__('Pirus run “%1” (#%2) failed', run.name, run.id)
            : trans.__('Pirus run “%1” (#%2) was canceled', run.name, run.id);
      Notification.emit(message, type, {
        autoClose: run.status === 'ERROR' ? false : 10000,
        actions: [
          {
            label: trans.__('Open run'),
            caption: trans.__('Show run #%1 in the Pirus panel', run.id),
            callback: () => void commands.execute(CommandIDs.openRun, { id: run.id })
          }
        ]
      });
    });

    commands.addCommand(CommandIDs.open, {
      label: trans.__('Open Pirus panel'),
      caption: trans.__('Show the Pirus pipelines, uploads and runs'),
      icon: pirusIcon,
      execute: (args: any) => {
        if (args?.tab) {
          router.setTab(args.tab);
        }
        showPanel();
      }
    });

    commands.addCommand(CommandIDs.openRun, {
      label: trans.__('Open Pirus run'),
      icon: pirusIcon,
      execute: (args: any) => {
        const id = Number(args?.id);
        if (Number.isFinite(id)) {
          router.show({ kind: 'run', id });
        }
        showPanel();
      }
    });

    commands.addCommand(CommandIDs.newRun, {
      label: trans.__('New Pirus run'),
      icon: pirusIcon,
      execute: (args: any) => {
        const inputs = Array.isArray(args?.inputs) ? args.inputs.map(String) : selectedFiles();
        const pipelineId = args?.pipelineId !== undefined ? Number(args.pipelineId) : undefined;
        router.show({ kind: 'new-run', pipelineId, inputs });
        showPanel();
      }
    });

    commands.addCommand(CommandIDs.runOnSelection, {
      label: trans.__('Run Pirus pipeline on selected files'),
      caption: trans.__('Open the Pirus new-run form with the selected files as inputs'),
      icon: pirusIcon,
      isEnabled: () => selectedFiles().length > 0,
      execute: () => {
        router.show({ kind: 'new-run', inputs: selectedFiles() });
        showPanel();
      }
    });

    commands.addCommand(CommandIDs.installSelection, {
      label: trans.__('Install as Pirus pipeline'),
      icon: pirusIcon,
      isVisible: () => selectedFiles().some(p => PACKAGE_RE.test(p)),
      execute: async () => {
        for (const path of selectedFiles().filter(p => PACKAGE_RE.test(p))) {
          try {
            const since = model.mark();
            const pipeline = await api.installPipeline({ path });
            model.applyRecord('pipeline', pipeline, since);
            Notification.info(trans.__('Installing %1 as a Pirus pipeline…', path), { autoClose: 4000 });
          } catch (error) {
            Notification.error(trans.__('Cannot install %1: %2', path, errorMessage(error)), { autoClose: false });
          }
        }
        router.setTab('pipelines');
        showPanel();
      }
    });

    commands.addCommand(CommandIDs.refresh, {
      label: trans.__('Refresh Pirus panel'),
      icon: pirusIcon,
      execute: async () => {
        if (events.state === 'open') {
          await model.refresh();
        } else {
          events.reconnect(); // its reconnection re-reads everything
        }
      }
    });

    app.contextMenu.addItem({
      command: CommandIDs.runOnSelection,
      selector: '.jp-DirListing-item[data-isdir="false"]',
      rank: 20
    });
    app.contextMenu.addItem({
      command: CommandIDs.installSelection,
      selector: '.jp-DirListing-item[data-isdir="false"]',
      rank: 21
    });

    if (palette) {
      const category = 'Pirus';
      for (const command of [CommandIDs.open, CommandIDs.newRun, CommandIDs.refresh]) {
        palette.addItem({ command, category });
      }
    }

    // Expose for debugging and the browser tests.
    (window as any).pirusJupyter = { api, model, router, events, uploads };
  }
};

export default plugin;

#!/usr/bin/env node
/**
 * Browser scenarios for the Pirus panel, in headless Chromium (Debian's, via playwright-core:
 * no browser download), against a running JupyterLab + Pirus server + LXD.
 *
 * Driven by tests/test_labextension.py, which starts `jupyter lab` and passes:
 *   PIRUS_URL, PIRUS_TOKEN          the JupyterLab server (token auth)
 *   PIRUS_COUNT_PACKAGE             a pipeline package (counts FASTQ reads; form: min_length, label)
 *   PIRUS_SLOW_PACKAGE              a pipeline package named "slow" that runs for minutes
 *   PIRUS_FASTQ                     a FASTQ file to upload
 *   PIRUS_BIG_FILE                  a larger input file (paused, page reloaded, resumed)
 *   PIRUS_SCREENSHOTS               where to save a screenshot of each main state
 *   PIRUS_CHROMIUM                  the browser (default /usr/bin/chromium)
 *   PIRUS_SIGNALS                   a folder: the script prints PIRUS:RESTART-SERVER, the driver
 *                                   restarts the server, starts a run and writes `restarted` there
 *
 * Exits non-zero at the first failing step (after saving a screenshot of the failure).
 */
import { existsSync } from 'node:fs';
import { basename, join } from 'node:path';

import { assert, env, startBrowser } from './harness.mjs';

const COUNT_PACKAGE = env('PIRUS_COUNT_PACKAGE');
const SLOW_PACKAGE = env('PIRUS_SLOW_PACKAGE');
const FASTQ = env('PIRUS_FASTQ');
const BIG_FILE = env('PIRUS_BIG_FILE');
const SIGNALS = env('PIRUS_SIGNALS');
const FASTQ_NAME = basename(FASTQ);

const h = await startBrowser({ permissions: ['clipboard-read', 'clipboard-write'], settle: 400 });
const { page, context, panel, tab, step, shot, log, execute, consoleErrors } = h;
// JupyterLab's own "Server Connection Error" dialogs may pop up after a server restart, several
// stacked and some seconds late: clicks that may meet them first dismiss them (topmost first)
// and are tried again if one appeared in between. Their only button is "Close", a *reject*
// button (Dialog.cancelButton): whatever its kind, the topmost dialog's last button closes it.
const dismissDialogs = async () => {
  for (let i = 0; i < 10; i++) {
    const dialog = page.locator('.jp-Dialog').last();
    if (!(await dialog.isVisible().catch(() => false))) {
      return;
    }
    const button = dialog.locator('.jp-Dialog-footer .jp-Dialog-button').last();
    await button.click({ timeout: 2000 }).catch(() => page.keyboard.press('Escape'));
    await page.waitForTimeout(200);
  }
};
const clickPastDialogs = async (locator, timeout = 30000) => {
  const until = Date.now() + timeout;
  for (;;) {
    await dismissDialogs();
    try {
      await locator.click({ timeout: 2000 });
      return;
    } catch (error) {
      if (Date.now() > until) {
        throw error;
      }
    }
  }
};

async function waitForToast(text, timeout = 30000) {
  const toast = page.locator('.Toastify__toast', { hasText: text }).first();
  await toast.waitFor({ state: 'visible', timeout });
  return toast;
}

async function dismissToasts() {
  // Without an id, JupyterLab's command dismisses every toast (they stay in the notification center).
  await execute('apputils:dismiss-notification', {});
  await page.locator('.Toastify__toast').first().waitFor({ state: 'detached', timeout: 5000 }).catch(() => undefined);
}

async function uploadThroughInput(path) {
  await tab('uploads').click();
  await panel.locator('[data-testid="pirus-file-input"]').setInputFiles(path);
}

async function waitForPipelineReady(name, timeout = 180000) {
  await tab('pipelines').click();
  const row = panel.locator('.jp-pirus-list-item[data-pipeline-id]', { hasText: name });
  await row.first().waitFor({ timeout: 60000 });
  // Live install progress: UPLOADING -> INSTALLING -> READY, pushed by the events websocket.
  await panel
    .locator(`.jp-pirus-list-item[data-status="READY"]`, { hasText: name })
    .first()
    .waitFor({ timeout });
  return row.first();
}

async function runStatus() {
  return panel.locator('.jp-pirus-details[data-run-id]').getAttribute('data-status');
}

await h.run(async () => {
  await step('open JupyterLab with token auth', async () => {
    await h.openLab();
    // The Pirus icon is in the left bar.
    await page.locator('.jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id="pirus-panel"]').waitFor();
    // JupyterLab opens its Launcher (and focuses it) a moment after start: let it, so that it
    // does not take the keyboard focus in the middle of a later step.
    await page.locator('.jp-Launcher').first().waitFor({ timeout: 15000 }).catch(() => undefined);
  });

  await step('open the panel from the command palette', async () => {
    await page.keyboard.press('Control+Shift+C');
    const input = page.locator('.lm-CommandPalette-input').first();
    await input.waitFor({ state: 'visible' });
    await input.fill('Open Pirus panel');
    await page.locator('.lm-CommandPalette-item', { hasText: 'Open Pirus panel' }).first().waitFor();
    await page.keyboard.press('Enter');
    await panel.waitFor({ state: 'visible' });
    await panel.locator('.jp-pirus-connection[data-state="open"]').waitFor();
    await panel.locator('.jp-pirus-empty', { hasText: 'No pipeline installed' }).waitFor();
    // Widen the side bar a little (as a user would, by dragging the splitter).
    const handle = page.locator('#jp-main-split-panel > .lm-SplitPanel-handle').first();
    const box = await handle.boundingBox();
    if (box) {
      const y = box.y + box.height / 2;
      await page.mouse.move(box.x + box.width / 2, y);
      await page.mouse.down();
      await page.mouse.move(box.x + 110, y, { steps: 5 });
      await page.mouse.up();
    }
    await shot('01-empty-panel');
  });

  await step('keyboard: the tabs move with the arrow keys', async () => {
    await tab('pipelines').click();
    await page.waitForFunction(() => document.activeElement?.getAttribute('data-tab') === 'pipelines');
    await page.keyboard.press('ArrowRight');
    await panel.locator('.jp-pirus-tab.jp-mod-current[data-tab="runs"]').waitFor();
    await panel.locator('.jp-pirus-empty', { hasText: 'No run yet' }).waitFor();
    await page.waitForFunction(() => document.activeElement?.getAttribute('data-tab') === 'runs');
    await page.keyboard.press('ArrowRight');
    await panel.locator('.jp-pirus-tab.jp-mod-current[data-tab="uploads"]').waitFor();
    assert(
      await page.evaluate(() => document.activeElement?.getAttribute('data-tab') === 'uploads'),
      'focus follows the selected tab'
    );
  });

  await step('upload a pipeline package and see it READY', async () => {
    await uploadThroughInput(COUNT_PACKAGE);
    const transfer = panel.locator('.jp-pirus-upload', { hasText: basename(COUNT_PACKAGE) });
    await transfer.waitFor();
    await panel.locator('.jp-pirus-upload[data-upload-state="done"]', { hasText: basename(COUNT_PACKAGE) }).waitFor({
      timeout: 60000
    });
    const row = await waitForPipelineReady('count');
    await tab('uploads').click();
    await panel.locator('.jp-pirus-upload', { hasText: 'installed: count 1.0' }).waitFor();
    await tab('pipelines').click();
    const text = await row.innerText();
    assert(text.includes('1.0'), `version shown: ${text}`);
    assert(text.includes('count test pipeline'), `description shown: ${text}`);
    await shot('02-pipeline-ready');
  });

  await step('pipeline details: manifest fields and form preview', async () => {
    await panel.locator('.jp-pirus-list-item', { hasText: 'count' }).locator('button.jp-pirus-row').click();
    const details = panel.locator('.jp-pirus-details[data-pipeline-id]');
    await details.waitFor();
    await details.locator('dt', { hasText: 'License' }).waitFor();
    assert((await details.innerText()).includes('MIT'), 'license shown');
    await details.locator('.jp-pirus-form-preview input').first().waitFor();
    await shot('03-pipeline-details');
    await panel.locator('[data-testid="pirus-back"]').click();
  });

  await step('upload a FASTQ with the file chooser', async () => {
    await tab('uploads').click();
    const [chooser] = await Promise.all([
      page.waitForEvent('filechooser'),
      panel.locator('[data-testid="pirus-dropzone"]').click()
    ]);
    await chooser.setFiles(FASTQ);
    await panel.locator('.jp-pirus-upload[data-upload-state="done"]', { hasText: FASTQ_NAME }).waitFor({ timeout: 60000 });
    await panel.locator('.jp-pirus-file', { hasText: FASTQ_NAME }).waitFor();
    await waitForToast(`Uploaded ${FASTQ_NAME}`);
    await shot('04-uploads');
    await dismissToasts();
  });

  await step('file browser: "Run Pirus pipeline on selected files"', async () => {
    await execute('filebrowser:go-to-path', { path: 'pirus-uploads' });
    const item = page.locator('.jp-DirListing-item', { hasText: FASTQ_NAME }).first();
    await item.waitFor({ timeout: 30000 });
    await item.click();
    await item.click({ button: 'right' });
    const entry = page.locator('.lm-Menu-item', { hasText: 'Run Pirus pipeline on selected files' }).first();
    await entry.waitFor();
    await entry.click();
    await panel.locator('.jp-pirus-newrun').waitFor();
    await panel.locator('[data-testid="pirus-newrun-inputs"]', { hasText: FASTQ_NAME }).waitFor();
    await panel.locator('#pirus-config_min_length').waitFor();
  });

  await step('the server refuses an invalid config: error next to the field', async () => {
    await panel.locator('#pirus-config_min_length').fill('-1');
    await panel.locator('[data-testid="pirus-newrun-name"]').fill('browser run');
    await panel.locator('[data-testid="pirus-newrun-submit"]').click();
    await panel.locator('.jp-pirus-error', { hasText: 'The configuration is not valid' }).waitFor();
    const fieldError = panel.locator('.jp-pirus-form .validationErrors', { hasText: 'minimum' });
    await fieldError.waitFor();
    await shot('05-form-error');
  });

  await step('start a run through the form', async () => {
    await panel.locator('#pirus-config_min_length').fill('3');
    await panel.locator('.jp-pirus-form .validationErrors', { hasText: 'minimum' }).waitFor({ state: 'detached' });
    await panel.locator('[data-testid="pirus-newrun-submit"]').click();
    await panel.locator('.jp-pirus-details[data-run-id]').waitFor();
    const title = await panel.locator('.jp-pirus-details-title').innerText();
    assert(title === 'browser run', `run name: ${title}`);
  });

  await step('watch progress reach DONE (live), then a notification', async () => {
    await panel.locator('.jp-pirus-details[data-run-id][data-status="DONE"]').waitFor({ timeout: 180000 });
    const progress = await panel.locator('.jp-pirus-details [role="progressbar"]').first().getAttribute('aria-valuenow');
    assert(progress === '100', `progress at 100%: ${progress}`);
    await panel.locator('[data-testid="pirus-outputs"] .jp-pirus-file', { hasText: 'counts.tsv' }).waitFor();
    await panel.locator('[data-testid="pirus-config"]', { hasText: 'min_length' }).waitFor();
    await panel.locator('[data-testid="pirus-metrics"]').waitFor();
    await panel.locator('[data-testid="pirus-log"]', { hasText: 'counted' }).waitFor();
    const toast = await waitForToast('finished');
    assert((await toast.innerText()).includes('browser run'), 'notification names the run');
    await toast.locator('button', { hasText: 'Open run' }).waitFor();
    await shot('06-run-done');
    await shot('06-run-done-panel', panel);
    await dismissToasts();
  });

  await step('open an output in JupyterLab', async () => {
    await panel.locator('[data-testid="pirus-outputs"] button.jp-pirus-name', { hasText: 'counts.tsv' }).click();
    const docTab = page.locator('#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current', { hasText: 'counts.tsv' });
    await docTab.waitFor();
    // The TSV viewer (or an editor) shows the file.
    await page.locator('#jp-main-dock-panel .jp-CSVViewer, #jp-main-dock-panel .jp-FileEditor').first().waitFor();
    await shot('07-output-open');
  });

  await step('notebook code: copy and insert into a notebook', async () => {
    const code = await panel.locator('[data-testid="pirus-run-code"]').textContent();
    assert(code.includes('import pirus_jupyter as pirus'), 'imports the toolkit');
    assert(code.includes('client = pirus.connect()'), 'connects');
    assert(/client\.pipeline\(\d+\)\.run\(/.test(code), 'runs the pipeline by id');
    assert(code.includes('"min_length": 3'), `config in the code: ${code}`);
    assert(code.includes('pirus-uploads/reads.fastq'), 'inputs in the code');
    assert(code.includes('name="browser run"'), 'name in the code');
    await panel.locator('[data-testid="pirus-run-copy-code"]').click();
    await waitForToast('copied');
    await panel.locator('[data-testid="pirus-run-insert-code"]').click();
    const cell = page.locator('.jp-NotebookPanel:visible .jp-Cell', { hasText: 'pirus.connect()' });
    await cell.first().waitFor({ timeout: 60000 });
    await dismissToasts();
  });

  await step('the inserted code runs in the kernel and starts the same run', async () => {
    const before = await page.evaluate(() => window.pirusJupyter.model.runs.size);
    await page.locator('.jp-NotebookPanel:visible .jp-Cell', { hasText: 'pirus.connect()' }).first().click();
    await execute('notebook:run-cell');
    await page.waitForFunction(n => window.pirusJupyter.model.runs.size > n, before, { timeout: 90000 });
    const run = await page.evaluate(() => window.pirusJupyter.model.runList()[0]);
    assert(run.name === 'browser run', `same name: ${run.name}`);
    assert(run.config.min_length === 3, 'same config');
    assert(run.inputs[0].path === 'pirus-uploads/reads.fastq', 'same input');
    await page.waitForFunction(id => window.pirusJupyter.model.runs.get(id)?.status === 'DONE', run.id, {
      timeout: 120000
    });
    await waitForToast(`(#${run.id}) finished`);
    await dismissToasts();
  });

  await step('re-run opens the form prefilled', async () => {
    await execute('pirus:open');
    await panel.locator('[data-testid="pirus-run-rerun"]').click();
    await panel.locator('.jp-pirus-newrun').waitFor();
    const value = await panel.locator('#pirus-config_min_length').inputValue();
    assert(value === '3', `min_length prefilled: ${value}`);
    assert((await panel.locator('[data-testid="pirus-newrun-name"]').inputValue()) === 'browser run', 'name prefilled');
    await panel.locator('[data-testid="pirus-newrun-inputs"]', { hasText: FASTQ_NAME }).waitFor();
    await panel.locator('.jp-pirus-newrun button', { hasText: 'Cancel' }).click();
  });

  await step('install the slow pipeline and start a run of it', async () => {
    await uploadThroughInput(SLOW_PACKAGE);
    await waitForPipelineReady('slow');
    await panel.locator('.jp-pirus-list-item', { hasText: 'slow' }).locator('button.jp-pirus-row').click();
    await panel.locator('[data-testid="pirus-pipeline-new-run"]').click();
    await panel.locator('.jp-pirus-newrun').waitFor();
    await panel.locator('.jp-pirus-newrun', { hasText: 'This pipeline has no settings' }).waitFor();
    await panel.locator('[data-testid="pirus-newrun-name"]').fill('slow run');
    await panel.locator('[data-testid="pirus-newrun-submit"]').click();
    await panel.locator('.jp-pirus-details[data-run-id]').waitFor();
    await panel.locator('.jp-pirus-details[data-status="RUNNING"]').waitFor({ timeout: 120000 });
    await panel.locator('.jp-pirus-details .jp-pirus-progress-label', { hasText: /step \d+/ }).waitFor({ timeout: 60000 });
    await shot('08-run-running');
  });

  await step('pause and resume the slow run', async () => {
    await panel.locator('[data-testid="pirus-run-pause"]').click();
    await panel.locator('.jp-pirus-details[data-status="PAUSE"]').waitFor({ timeout: 30000 });
    await panel.locator('[data-testid="pirus-run-resume"]').click();
    await panel.locator('.jp-pirus-details[data-status="RUNNING"]').waitFor({ timeout: 30000 });
  });

  await step('runs list: live progress bars and the status filter', async () => {
    await panel.locator('[data-testid="pirus-back"]').click();
    await tab('runs').click();
    const rows = panel.locator('.jp-pirus-list[aria-label="Runs"] > li');
    await rows.nth(2).waitFor();
    assert((await rows.count()) === 3, 'three runs');
    const filter = panel.locator('[data-testid="pirus-run-filter"]');
    await filter.selectOption('DONE');
    await panel.locator('.jp-pirus-list[aria-label="Runs"] > li[data-status="DONE"]').first().waitFor();
    assert((await rows.count()) === 2, 'filtered to DONE');
    await filter.selectOption('active');
    await panel.locator('.jp-pirus-list[aria-label="Runs"] > li[data-status="RUNNING"]').waitFor();
    assert((await rows.count()) === 1, 'filtered to active');
    await filter.selectOption('all');
    await rows.nth(2).waitFor();
    await shot('09-runs-list');
  });

  await step('cancel the slow run (with confirmation)', async () => {
    await panel.locator('.jp-pirus-list-item[data-status="RUNNING"] button.jp-pirus-row').click();
    await panel.locator('[data-testid="pirus-run-cancel"]').click();
    const dialog = page.locator('.jp-Dialog');
    await dialog.waitFor();
    await shot('10-cancel-confirmation');
    await dialog.locator('.jp-Dialog-button', { hasText: 'Cancel run' }).click();
    await panel.locator('.jp-pirus-details[data-status="CANCELED"]').waitFor({ timeout: 60000 });
    const toast = await waitForToast('was canceled');
    assert((await toast.innerText()).includes('slow run'), 'cancel notification');
    await toast.locator('button', { hasText: 'Open run' }).click();
    await panel.locator('.jp-pirus-details[data-status="CANCELED"]').waitFor();
    await panel.locator('[data-testid="pirus-run-delete"]').waitFor();
    await dismissToasts();
  });

  await step('uninstall a pipeline with confirmation', async () => {
    await tab('pipelines').click();
    await panel.locator('.jp-pirus-list-item', { hasText: 'slow' }).locator('button.jp-pirus-row').click();
    await panel.locator('[data-testid="pirus-pipeline-uninstall"]').click();
    const dialog = page.locator('.jp-Dialog');
    await dialog.waitFor();
    // Keyboard: Escape keeps the pipeline.
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'detached' });
    await panel.locator('.jp-pirus-details[data-pipeline-id]').waitFor();
    await panel.locator('[data-testid="pirus-pipeline-uninstall"]').click();
    await page.locator('.jp-Dialog .jp-Dialog-button', { hasText: 'Uninstall' }).click();
    await panel.locator('.jp-pirus-list').waitFor();
    await panel.locator('.jp-pirus-list-item', { hasText: 'slow' }).waitFor({ state: 'detached' });
    await dismissToasts();
  });

  await step('dark theme', async () => {
    await execute('apputils:change-theme', { theme: 'JupyterLab Dark' });
    await page.waitForFunction(() => document.body.dataset.jpThemeLight === 'false', null, { timeout: 30000 });
    await page.waitForTimeout(1000);
    const background = await panel.evaluate(el => getComputedStyle(el).backgroundColor);
    const [r, g, b] = background.match(/\d+/g).map(Number);
    assert((r + g + b) / 3 < 100, `the panel follows the dark theme: ${background}`);
    await tab('runs').click();
    await panel.locator('.jp-pirus-list-item[data-status="DONE"] button.jp-pirus-row').last().click();
    await panel.locator('.jp-pirus-details[data-status="DONE"]').waitFor();
    const text = await panel.locator('.jp-pirus-details-title').evaluate(el => getComputedStyle(el).color);
    const [tr, tg, tb] = text.match(/\d+/g).map(Number);
    assert((tr + tg + tb) / 3 > 150, `text is light on dark: ${text}`);
    await shot('11-dark-run-done');
    await tab('pipelines').click();
    await shot('12-dark-pipelines', panel);
    await execute('apputils:change-theme', { theme: 'JupyterLab Light' });
    await page.waitForFunction(() => document.body.dataset.jpThemeLight === 'true', null, { timeout: 30000 });
  });

  await step('screenshot for the documentation', async () => {
    await tab('runs').click();
    await panel.locator('.jp-pirus-list-item[data-status="DONE"] button.jp-pirus-row').last().click();
    await panel.locator('.jp-pirus-details[data-status="DONE"]').waitFor();
    await page.locator('#jp-main-dock-panel .lm-TabBar-tab', { hasText: 'counts.tsv' }).click();
    await page.locator('#jp-main-dock-panel .jp-CSVViewer').first().waitFor();
    await dismissToasts();
    await page.mouse.move(700, 600);
    await shot('13-docs-panel');
  });

  await step('an identical run asked to reuse is DONE at once, badged "reused"', async () => {
    const run = await page.evaluate(() => {
      const { api, model } = window.pirusJupyter;
      const source = model.runList().find(r => r.name === 'browser run' && r.status === 'DONE');
      return api.request('POST', ['runs'], {
        body: {
          pipeline_id: source.pipeline_id,
          name: 'reused in the browser',
          config: source.config,
          inputs: source.inputs.map(i => i.path),
          reuse: true
        }
      });
    });
    assert(run.status === 'DONE' && run.reused_from !== null, `reused at once: ${JSON.stringify(run)}`);
    await page.evaluate(id => window.pirusJupyter.router.show({ kind: 'run', id }), run.id);
    const details = panel.locator(`.jp-pirus-details[data-run-id="${run.id}"]`);
    await details.locator('[data-testid="pirus-run-reused"]').waitFor();
    await details.locator('[data-testid="pirus-run-reused-from"]', { hasText: `run #${run.reused_from}` }).waitFor();
    await shot('14-run-reused', panel);
  });

  await step("a run made from another run's output shows the lineage graph", async () => {
    const run = await page.evaluate(() => {
      const { api, model } = window.pirusJupyter;
      const source = model.runList().find(r => r.name === 'browser run' && r.status === 'DONE');
      return api.request('POST', ['runs'], {
        body: {
          pipeline_id: source.pipeline_id,
          name: 'made from an output',
          inputs: [source.outputs[0].path]
        }
      });
    });
    await page.evaluate(id => window.pirusJupyter.router.show({ kind: 'run', id }), run.id);
    const details = panel.locator(`.jp-pirus-details[data-run-id="${run.id}"]`);
    await panel
      .locator(`.jp-pirus-details[data-run-id="${run.id}"]:is([data-status="DONE"], [data-status="ERROR"])`)
      .waitFor({ timeout: 120000 });
    const graph = details.locator('[data-testid="pirus-run-lineage-graph"]');
    await graph.waitFor();
    await page.waitForFunction(
      el => el.complete && el.naturalWidth > 0, await graph.elementHandle(), { timeout: 30000 });
    await shot('15-run-lineage', panel);
  });

  await step('reconnects: state is re-read after the socket drops', async () => {
    await page.evaluate(() => window.pirusJupyter.events.reconnect());
    await panel.locator('.jp-pirus-connection[data-state="open"]').waitFor();
  });

  await step('server restart: the panel reconnects by itself and re-reads the state', async () => {
    // No notebook or kernel across the restart and the later page reload (JupyterLab would ask
    // which kernel to start).
    await page.evaluate(async () => {
      for (const widget of [...window.jupyterapp.shell.widgets('main')]) {
        widget.dispose();
      }
      await window.jupyterapp.serviceManager.sessions.shutdownAll();
    });
    console.log('PIRUS:RESTART-SERVER');
    await panel.locator('.jp-pirus-connection:not([data-state="open"])').waitFor({ timeout: 30000 });
    await shot('16-reconnecting', panel);
    const deadline = Date.now() + 120000;
    while (!existsSync(join(SIGNALS, 'restarted'))) {
      assert(Date.now() < deadline, 'the server was restarted');
      await page.waitForTimeout(200);
    }
    await panel.locator('.jp-pirus-connection[data-state="open"]').waitFor({ timeout: 60000 });
    await page.waitForTimeout(3000); // let late dialogs appear before the first click
    await clickPastDialogs(panel.locator('[data-testid="pirus-back"]'), 5000).catch(() => undefined);
    await clickPastDialogs(tab('runs'));
    await dismissDialogs();
    // Started by the driver while the panel was disconnected.
    await panel.locator('.jp-pirus-list-item', { hasText: 'created while away' }).waitFor({ timeout: 30000 });
  });

  await step('resumable upload: pause, reload the page, choose the file again, resume', async () => {
    await dismissDialogs(); // late ones from the server restart
    // Slow the upload down so that it can be paused half way.
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false,
      latency: 0,
      downloadThroughput: -1,
      uploadThroughput: 3 * 1024 * 1024
    });
    const name = basename(BIG_FILE);
    await uploadThroughInput(BIG_FILE);
    const transfer = panel.locator('.jp-pirus-upload', { hasText: name });
    await transfer.waitFor();
    // Wait for some progress, then pause.
    await page.waitForFunction(
      n => {
        const item = window.pirusJupyter.uploads.items.find(i => i.filename === n);
        return item && item.sent > 2 * 1024 * 1024;
      },
      name,
      { timeout: 60000 }
    );
    await transfer.locator('button', { hasText: 'Pause' }).click();
    await panel.locator('.jp-pirus-upload[data-upload-state="paused"]', { hasText: name }).waitFor();
    await shot('14-upload-paused');
    const sentBefore = await page.evaluate(
      n => window.pirusJupyter.uploads.items.find(i => i.filename === n).sent,
      name
    );
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false,
      latency: 0,
      downloadThroughput: -1,
      uploadThroughput: -1
    });

    await page.reload();
    await page.waitForFunction(() => window.jupyterapp && window.pirusJupyter, null, { timeout: 60000 });
    await execute('pirus:open', { tab: 'uploads' });
    const interrupted = panel.locator('.jp-pirus-upload[data-upload-state="interrupted"]', { hasText: name });
    await interrupted.waitFor({ timeout: 30000 });
    assert((await interrupted.innerText()).includes('choose the same file again'), 'offers to resume');
    await shot('15-upload-interrupted');

    const [chooser] = await Promise.all([
      page.waitForEvent('filechooser'),
      interrupted.locator('button', { hasText: 'Choose file' }).click()
    ]);
    await chooser.setFiles(BIG_FILE);
    await panel.locator('.jp-pirus-upload[data-upload-state="done"]', { hasText: name }).waitFor({ timeout: 60000 });
    const item = await page.evaluate(n => window.pirusJupyter.uploads.items.find(i => i.filename === n), name);
    assert(item.resumed, 'the upload continued the interrupted one');
    assert(sentBefore > 0, `bytes were sent before the pause: ${sentBefore}`);
    await panel.locator('.jp-pirus-upload[data-upload-state="interrupted"]').waitFor({ state: 'detached' });
    await panel.locator('.jp-pirus-file', { hasText: name }).waitFor();
  });

  // Refused connections while the server restarts are expected; anything else from the panel
  // is a failure.
  const pirusErrors = consoleErrors.filter(
    e => /pirus/i.test(e) && !/Failed to load resource|ERR_CONNECTION_REFUSED/.test(e)
  );
  const pageErrors = consoleErrors.filter(e => e.startsWith('page error'));
  if (pageErrors.length) {
    console.log(`uncaught errors in the page (JupyterLab's or ours):\n${pageErrors.join('\n')}`);
  }
  if (pirusErrors.length) {
    throw new Error(`errors in the browser console:\n${pirusErrors.join('\n')}`);
  }
}, async () => {
  if (consoleErrors.length) {
    console.error(`browser console errors:\n${consoleErrors.slice(-20).join('\n')}`);
  }
  try {
    // What the panel believed, next to what the server says: tells a missed update from a
    // server that is stuck.
    const state = await page.evaluate(async () => {
      const p = window.pirusJupyter;
      const brief = list => list.map(x => `#${x.id} ${x.name} ${x.status}`).join(', ');
      return {
        panelPipelines: brief(p.model.pipelineList()),
        serverPipelines: brief(await p.api.pipelines()),
        panelRuns: brief(p.model.runList()),
        socket: p.events.state,
        loading: p.model.loading,
        loadError: p.model.loadError,
        pendingRequests: [...p.api.pending].map(([k, t]) => `${k} for ${Date.now() - t} ms`),
        serverRuns: brief((await p.api.runs()).items)
      };
    });
    console.error(`state at the failure: ${JSON.stringify(state, null, 1)}`);
  } catch {
    // the page is gone
  }
});

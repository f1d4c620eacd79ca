#!/usr/bin/env node
/**
 * The panel's walk-through fixes (issue 17, item 2) in headless Chromium (Debian's, via
 * playwright-core), against a running JupyterLab + Pirus server + LXD prepared by
 * tests/test_panel_polish.py, which passes:
 *   PIRUS_URL, PIRUS_TOKEN     the JupyterLab server (token auth)
 *   PIRUS_LONG_NAME            the name of the READY pipeline whose form takes FASTQ files
 *                              (a second one, "vcf-fails", takes VCF; a third failed to install)
 *   PIRUS_WAITING_RUN          the JSON record of a run of the first, paused
 *   PIRUS_FAILED_RUN           the id of a run that ended in ERROR, with output on stderr only
 *   PIRUS_SCREENSHOTS          where to save a screenshot of each screen (polish-*.png)
 *   PIRUS_CHROMIUM             the browser (default /usr/bin/chromium)
 *
 * Exits non-zero at the first failing step (after saving polish-failure.png).
 */
import { assert, env, startBrowser } from './harness.mjs';

const LONG_NAME = env('PIRUS_LONG_NAME');
const WAITING_RUN = JSON.parse(env('PIRUS_WAITING_RUN'));
const FAILED_RUN = env('PIRUS_FAILED_RUN');

const h = await startBrowser({ prefix: 'polish-' });
const { page, panel, tab, step, shot, execute, failedRequests, consoleErrors } = h;
const pipelineRow = name => panel.locator('.jp-pirus-list-item[data-pipeline-id]', { hasText: name }).first();

/** The panel's elapsed-time format (format.ts formatDuration), for the expected value. */
function duration(seconds) {
  const s = Math.floor(seconds);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
}

await h.run(async () => {
  await step('open JupyterLab and the panel', async () => {
    await h.openLab();
    await execute('pirus:open', { tab: 'pipelines' });
    await panel.locator('.jp-pirus-connection[data-state="open"]').waitFor();
    await pipelineRow(LONG_NAME).waitFor();
  });

  await step('a failed install: listed with "Clear failed"; full names on hover', async () => {
    await panel.locator('.jp-pirus-list-item[data-status="ERROR"]').waitFor();
    await panel.locator('[data-testid="pirus-clear-failed"]').waitFor();
    const title = await pipelineRow(LONG_NAME).locator('.jp-pirus-name').getAttribute('title');
    assert(title === LONG_NAME, `the name's title: ${title}`);
    const description = await pipelineRow(LONG_NAME).locator('.jp-pirus-row-sub').getAttribute('title');
    assert(description === 'Counts reads in FASTQ files. one counts.tsv <b>no HTML</b>', `the description's title: ${description}`);
    await shot('01-pipelines-with-a-failed-install', panel);
  });

  await step('the dialog of a pipeline that never installed', async () => {
    await panel.locator('.jp-pirus-list-item[data-status="ERROR"] button.jp-pirus-row').click();
    await panel.locator('[data-testid="pirus-pipeline-uninstall"]', { hasText: 'Remove' }).click();
    const dialog = page.locator('.jp-Dialog');
    await dialog.waitFor();
    const text = await dialog.innerText();
    assert(text.includes('Remove the failed install of'), `dialog: ${text}`);
    assert(!text.includes('LXD image') && !text.includes('past runs'), `dialog: ${text}`);
    await shot('02-remove-failed-install-dialog');
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'detached' });
    await panel.locator('[data-testid="pirus-back"]').click();
  });

  await step('"Clear failed" removes every failed install in one action', async () => {
    await panel.locator('[data-testid="pirus-clear-failed"]').click();
    await page.locator('.jp-Dialog .jp-Dialog-button', { hasText: 'Clear' }).click();
    await panel.locator('.jp-pirus-list-item[data-status="ERROR"]').waitFor({ state: 'detached' });
    await panel.locator('[data-testid="pirus-clear-failed"]').waitFor({ state: 'detached' });
    await pipelineRow('vcf-fails').waitFor();
    await shot('03-failed-installs-cleared', panel);
  });

  await step('the description renders Markdown, and HTML in it stays text', async () => {
    await pipelineRow(LONG_NAME).locator('button.jp-pirus-row').click();
    const description = panel.locator('.jp-pirus-details .jp-pirus-description');
    await description.locator('strong', { hasText: 'reads' }).waitFor();
    await description.locator('li code', { hasText: 'counts.tsv' }).waitFor();
    assert((await description.locator('b').count()) === 0, 'no <b> element from the description');
    assert((await description.innerText()).includes('<b>no HTML</b>'), 'the HTML shown as text');
    const title = await panel.locator('.jp-pirus-details-title').getAttribute('title');
    assert(title === LONG_NAME, `the details title's title: ${title}`);
    await shot('04-pipeline-markdown', panel);
  });

  await step('runs: no repeated percentage, the clock stopped while paused', async () => {
    await tab('runs').click();
    const row = panel.locator(`.jp-pirus-list-item[data-run-id="${WAITING_RUN.id}"][data-status="PAUSE"]`);
    await row.waitFor();
    const label = await row.locator('.jp-pirus-progress-label').innerText();
    assert(label === 'x.fastq.gz 100%', `progress label: ${label}`);
    // paused_since - start - paused_seconds: what the server says, whatever the time now
    const expected = duration(
      (Date.parse(WAITING_RUN.paused_since) - Date.parse(WAITING_RUN.start)) / 1000 - WAITING_RUN.paused_seconds
    );
    await row.locator('.jp-pirus-elapsed', { hasText: expected }).waitFor();
    await shot('05-runs-paused', panel);
  });

  await step('a failed run: the log opens on stderr, no "listed when the run is done"', async () => {
    await panel.locator(`.jp-pirus-list-item[data-run-id="${FAILED_RUN}"] button.jp-pirus-row`).click();
    await panel.locator('.jp-pirus-details[data-status="ERROR"]').waitFor();
    await panel.locator('[data-testid="pirus-log"]', { hasText: 'no reference genome given' }).waitFor();
    const selected = await panel.locator('.jp-pirus-segmented [aria-selected="true"]').innerText();
    assert(selected === 'stderr', `the stream shown: ${selected}`);
    const outputs = await panel.locator('.jp-pirus-section', { hasText: 'Outputs' }).first().innerText();
    assert(!outputs.includes('Listed when the run is done'), `outputs: ${outputs}`);
    // what it wrote before failing is listed
    await panel.locator('[data-testid="pirus-outputs"] .jp-pirus-file', { hasText: 'partial.txt' }).waitFor();
    await shot('06-failed-run-log-on-stderr', panel);
  });

  await step('new run from a selection: only the files the pipeline accepts, a pipeline that fits', async () => {
    await execute('filebrowser:go-to-path', { path: 'data' });
    const item = name => page.locator('.jp-DirListing-item', { hasText: name }).first();
    await item('a.fastq').waitFor();
    await item('a.fastq').click();
    await item('b.vcf').click({ modifiers: ['Control'] });
    await item('notes.txt').click({ modifiers: ['Control'] });
    await item('notes.txt').click({ button: 'right' });
    await page.locator('.lm-Menu-item', { hasText: 'Run Pirus pipeline on selected files' }).first().click();
    await panel.locator('.jp-pirus-newrun').waitFor();
    // a.fastq fits the FASTQ pipeline best (b.vcf the other: one file each; the newest
    // listed first wins a tie, so either may be chosen; what matters is that the chips follow)
    await panel.locator('[data-testid="pirus-newrun-skipped"]').waitFor();
    const chosen = await panel.locator('[data-testid="pirus-newrun-pipeline"] option:checked').innerText();
    const chips = await panel.locator('[data-testid="pirus-newrun-inputs"]').innerText();
    const skipped = await panel.locator('[data-testid="pirus-newrun-skipped"]').innerText();
    if (chosen.includes(LONG_NAME)) {
      assert(chips.includes('a.fastq') && !chips.includes('b.vcf'), `inputs: ${chips}`);
      assert(skipped.includes('b.vcf') && skipped.includes('notes.txt'), `skipped: ${skipped}`);
    } else {
      assert(chosen.includes('vcf-fails'), `pipeline chosen: ${chosen}`);
      assert(chips.includes('b.vcf') && !chips.includes('a.fastq'), `inputs: ${chips}`);
    }
    assert(!chips.includes('notes.txt'), `notes.txt is accepted by neither: ${chips}`);
    await shot('07-newrun-prefilled', panel);
    // choosing the other pipeline filters the selection again
    const other = chosen.includes(LONG_NAME) ? 'vcf-fails' : LONG_NAME;
    await panel.locator('[data-testid="pirus-newrun-pipeline"]').selectOption({ label: `${other} 1.0` });
    const expectChip = other === 'vcf-fails' ? 'b.vcf' : 'a.fastq';
    await panel.locator('[data-testid="pirus-newrun-inputs"]', { hasText: expectChip }).waitFor();
  });

  let width = 0; // the panel's width set by dragging, kept across the reload
  const panelWidth = () => panel.evaluate(node => node.getBoundingClientRect().width);
  await step("the panel's width: dragged wider, kept in the state database", async () => {
    const before = await panelWidth();
    const handle = page.locator('#jp-main-split-panel > .lm-SplitPanel-handle').first();
    const box = await handle.boundingBox();
    assert(box, 'the side area has a split handle');
    const y = box.y + box.height / 2;
    await page.mouse.move(box.x + box.width / 2, y);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width / 2 + 120, y, { steps: 5 });
    await page.mouse.up();
    width = await panelWidth();
    assert(width > before + 60, `the panel is wider: ${before} -> ${width}`);
    // saved after the drag ends (debounced), in the workspace on the server (debounced too)
    const until = Date.now() + 30000;
    for (;;) {
      const saved = await h.savedState('pirus-jupyter:panel-width');
      if (saved && Math.abs(saved.width - width) <= 1) {
        break;
      }
      assert(Date.now() < until, `the width was not saved: ${JSON.stringify(saved)} (${width})`);
      await page.waitForTimeout(300);
    }
  });

  await step('the open tab and view survive a reload', async () => {
    await execute('pirus:open-run', { id: Number(FAILED_RUN) });
    await panel.locator(`.jp-pirus-details[data-run-id="${FAILED_RUN}"]`).waitFor();
    // the state database is written on navigation, to the workspace on the server (debounced):
    // wait until it is there before loading the page again
    const savedView = () => h.savedState('pirus-jupyter:panel');
    const until = Date.now() + 30000;
    for (;;) {
      const saved = await savedView();
      const top = saved && (saved.stack || [])[(saved.stack || []).length - 1];
      if (saved?.tab === 'runs' && top?.kind === 'run' && top.id === Number(FAILED_RUN)) {
        break;
      }
      assert(Date.now() < until, `the view was not saved: ${JSON.stringify(saved)}`);
      await page.waitForTimeout(300);
    }
    // The side area closed before the reload: JupyterLab's own layout then keeps no width
    // for it (its share is 0), so only the panel's saved width can bring it back.
    await page.locator('.jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id="pirus-panel"]').click();
    const closedUntil = Date.now() + 30000;
    for (;;) {
      const layout = await h.savedState('layout-restorer:data');
      if (layout?.left?.collapsed === true) {
        break;
      }
      assert(Date.now() < closedUntil, `the closed side area was not saved: ${JSON.stringify(layout?.left)}`);
      await page.waitForTimeout(300);
    }
    await page.reload();
    await h.waitForLab();
    // JupyterLab restores its layout (the side area closed) after start: open the panel after it
    await page.evaluate(() => window.jupyterapp.restored);
    await execute('pirus:open');
    await panel
      .locator(`.jp-pirus-details[data-run-id="${FAILED_RUN}"]`)
      .waitFor()
      .catch(async error => {
        const seen = await page.evaluate(async token => {
          const reply = await fetch(`${location.origin}/lab/api/workspaces/default`, {
            headers: { Authorization: `token ${token}` }
          });
          const saved = ((await reply.json()).data || {})['pirus-jupyter:panel'];
          const p = window.pirusJupyter;
          return JSON.stringify({ router: p.router.snapshot(), restored: p.restoredView, saved, url: location.href });
        }, h.token);
        throw new Error(`${error.message}\nafter the reload: ${seen}`);
      });
    await panel.locator('.jp-pirus-tab.jp-mod-current[data-tab="runs"]').waitFor();
    await shot('08-after-reload', panel);
    // the width came back (lumino may round the handle's position by a pixel or two)
    await page
      .waitForFunction(
        ([w]) => Math.abs(document.querySelector('#pirus-panel').getBoundingClientRect().width - w) <= 3,
        [width],
        { timeout: 10000 }
      )
      .catch(async () => assert(false, `the width after the reload: ${await panelWidth()}, not ${width}`));
    await shot('08b-width-after-reload');
  });

  await step('the settings are in the Settings Editor', async () => {
    await execute('settingeditor:open', { query: 'Pirus' });
    await page.locator('.jp-SettingsPanel, .jp-SettingsEditor').first().waitFor();
    await page.getByText('Notify when a run ends').first().waitFor();
    await page.getByText('Log lines shown').first().waitFor();
    await shot('09-settings-editor');
  });

  const iconRequests = failedRequests.filter(r => r.includes('/icon'));
  assert(!iconRequests.length, `icon requests that failed: ${iconRequests.join(', ')}`);
  assert(!failedRequests.length, `Pirus API requests that failed: ${failedRequests.join(', ')}`);
  const pirusErrors = consoleErrors.filter(e => /pirus|404/i.test(e));
  assert(!pirusErrors.length, `errors in the browser console:\n${pirusErrors.join('\n')}`);
}, async () => {
  console.error(`failed requests:\n${failedRequests.join('\n')}\nconsole errors:\n${consoleErrors.slice(-20).join('\n')}`);
});

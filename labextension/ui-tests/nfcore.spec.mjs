#!/usr/bin/env node
/**
 * Browser scenario for nf-core forms in the Pirus panel, in headless Chromium (Debian's, via
 * playwright-core), against a running JupyterLab + Pirus server + LXD.
 *
 * Driven by tests/test_labextension_nfcore.py, which installs a busybox pipeline whose form.json
 * is nf-core's template schema and passes:
 *   PIRUS_URL, PIRUS_TOKEN   the JupyterLab server (token auth)
 *   PIRUS_PIPELINE_ID        that pipeline
 *   PIRUS_INPUT_ERROR        the errorMessage of its `input` parameter
 *   PIRUS_SCREENSHOTS        where to save a screenshot of each state (nfcore-*.png)
 *   PIRUS_CHROMIUM           the browser (default /usr/bin/chromium)
 * A file samples.csv is at the Jupyter root. Exits non-zero at the first failing step.
 */
import { assert, env, startBrowser } from './harness.mjs';

const PIPELINE_ID = Number(env('PIRUS_PIPELINE_ID'));
const INPUT_ERROR = env('PIRUS_INPUT_ERROR');

const h = await startBrowser({ prefix: 'nfcore-', viewport: { width: 1440, height: 1000 }, settle: 0 });
const { page, panel, step, shot, pageErrors } = h;
const form = panel.locator('[data-testid="pirus-newrun-form"]');
const sections = form.locator('.jp-pirus-form-section');

await h.run(async () => {
  await step('open the new-run form of the nf-core pipeline', async () => {
    await h.openLab({ launcher: true });
    await page.evaluate(
      ([id]) => window.jupyterapp.commands.execute('pirus:new-run', { pipelineId: id, inputs: ['samples.csv'] }),
      [PIPELINE_ID]
    );
    await form.locator('#pirus-config_input').waitFor();
  });

  await step('groups are titled sections; hidden parameters are out of sight', async () => {
    const titles = await sections.locator('.jp-pirus-form-section-title').allInnerTexts();
    // The institutional group has only hidden parameters: it shows with the toggle.
    assert(
      JSON.stringify(titles) === JSON.stringify(['Input/output options', 'Reference genome options', 'Generic options']),
      `section titles: ${JSON.stringify(titles)}`
    );
    const io = form.locator('section[data-group="input_output_options"]');
    assert((await io.innerText()).includes('Define where the pipeline'), 'group description shown');
    assert((await io.locator('#pirus-config_input').count()) === 1, 'input in its section');
    const groupHelp = form.locator('section[data-group="generic_options"] > details.jp-pirus-form-help');
    assert((await groupHelp.count()) === 1, "the group's own help text");
    assert((await form.locator('#pirus-config_igenomes_ignore').count()) === 0, 'hidden parameter hidden');
    // help_text: collapsed Markdown under its field.
    const help = form.locator('[data-property="genome"] details.jp-pirus-form-help');
    assert((await help.getAttribute('open')) === null, 'help collapsed');
    await help.locator('summary').click();
    await help.locator('code', { hasText: '--genome GRCh38' }).waitFor();
    await help.locator('a[href="https://nf-co.re/usage/reference_genomes"]').waitFor();
    // The sample-sheet field is offered the input it accepts.
    const options = await form.locator('#pirus-config_input').evaluate(input =>
      Array.from(input.list ? input.list.options : []).map(o => o.value)
    );
    assert(JSON.stringify(options) === JSON.stringify(['samples.csv']), `suggestions: ${JSON.stringify(options)}`);
    await shot('01-sections', panel);
  });

  await step('the toggle shows the hidden parameters', async () => {
    await form.locator('[data-testid="pirus-newrun-show-hidden"]').check();
    await form.locator('#pirus-config_igenomes_ignore').waitFor();
    await form.locator('section[data-group="institutional_config_options"]').waitFor();
    await form.locator('section[data-group="institutional_config_options"]').scrollIntoViewIfNeeded();
    await shot('02-hidden-shown', panel);
    await form.locator('[data-testid="pirus-newrun-show-hidden"]').uncheck();
    await form.locator('#pirus-config_igenomes_ignore').waitFor({ state: 'detached' });
  });

  await step("a value breaking the pattern shows the schema's errorMessage", async () => {
    await form.locator('#pirus-config_input').fill('my samples.csv');
    await form.locator('#pirus-config_outdir').fill('results');
    // A hidden parameter with a bad value: out of sight when the run is asked for.
    const toggle = form.locator('[data-testid="pirus-newrun-show-hidden"]');
    await toggle.check();
    await form.locator('#pirus-config_max_multiqc_email_size').fill('a lot');
    await toggle.uncheck();
    await form.locator('#pirus-config_max_multiqc_email_size').waitFor({ state: 'detached' });
    await panel.locator('[data-testid="pirus-newrun-submit"]').click();
    const error = form.locator('[data-property="input"] .validationErrors', { hasText: INPUT_ERROR });
    await error.waitFor();
    // The refused hidden parameter comes into sight with its message.
    await form.locator('[data-property="max_multiqc_email_size"] .validationErrors', { hasText: 'does not match' }).waitFor();
    const text = await form.locator('[data-property="input"]').innerText();
    assert(!text.includes('does not match'), `no generic message: ${text}`);
    await form.locator('#pirus-config_input').scrollIntoViewIfNeeded();
    await shot('03-error-message', panel);
  });

  await step('a valid config runs to DONE', async () => {
    await form.locator('#pirus-config_input').fill('samples.csv');
    await form.locator('#pirus-config_max_multiqc_email_size').fill('10.MB'); // still in sight
    await panel.locator('[data-testid="pirus-newrun-submit"]').click();
    await panel.locator('.jp-pirus-details[data-run-id][data-status="DONE"]').waitFor({ timeout: 180000 });
    await panel.locator('[data-testid="pirus-outputs"] .jp-pirus-file', { hasText: 'samplesheet.csv' }).waitFor();
    await shot('04-run-done', panel);
  });

  await step('the notebook form: sections, the hidden toggle, the errorMessage', async () => {
    // (The command's result, the notebook widget, stays in the page.)
    await page.evaluate(async () => {
      await window.jupyterapp.commands.execute('notebook:create-new', { kernelName: 'python3' });
    });
    const notebook = page.locator('.jp-NotebookPanel:visible');
    const editor = notebook.locator('.jp-Cell .cm-content').first();
    await editor.waitFor({ timeout: 60000 });
    await editor.click();
    await page.keyboard.insertText(
      'import pirus_jupyter as pirus\n' +
        `form = pirus.connect().pipeline(${PIPELINE_ID}).form(inputs=["samples.csv"])\n` +
        'form'
    );
    // Run it as a person would, once the kernel is there (a run asked earlier may be lost).
    await page.locator('.jp-StatusBar-Item', { hasText: /\| Idle/ }).first().waitFor({ timeout: 120000 });
    await editor.click();
    await page.keyboard.press('Shift+Enter');
    const output = notebook.locator('.jp-OutputArea-output').first();
    await output.locator('.widget-html', { hasText: 'Reference genome options' }).waitFor({ timeout: 120000 });
    const checkbox = name => output.locator('.widget-checkbox', { hasText: name });
    assert(!(await checkbox('igenomes_ignore').isVisible()), 'hidden parameter hidden in the notebook');
    await output.locator('button', { hasText: 'Show hidden parameters' }).click();
    await checkbox('igenomes_ignore').waitFor();
    await output.locator('button', { hasText: 'Show hidden parameters' }).click();
    await checkbox('igenomes_ignore').waitFor({ state: 'hidden' });
    const input = output.locator('.widget-text', { has: page.locator('label', { hasText: /^input \*$/ }) }).locator('input');
    const help = output.locator('.widget-html details', { hasText: 'Help' }).first();
    await help.locator('summary').click();
    await help.locator('a', { hasText: 'usage docs' }).waitFor();
    await input.fill('my samples.csv');
    await output.locator('.widget-html', { hasText: INPUT_ERROR }).waitFor();
    await shot('05-notebook-form', notebook);
  });

  assert(pageErrors.length === 0, `page errors: ${pageErrors.join('\n')}`);
  console.log('PIRUS:NFCORE-OK');
});

// End-to-end test of `gradflow playground` in headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core; no browser is downloaded).
// Run it with ./run.sh, which builds the binary first.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const BIN = process.env.GRADFLOW_BIN || path.resolve(here, '../../../target/debug/gradflow');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = process.env.SCREENSHOT || path.join(here, 'screenshot.png');

/** Start `gradflow playground --port 0` and wait for the URL it prints. */
function startServer() {
  return new Promise((resolve, reject) => {
    const proc = spawn(BIN, ['playground', '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    const timer = setTimeout(() => reject(new Error(`no URL printed within 20 s: ${out}`)), 20000);
    proc.on('error', reject);
    proc.on('exit', (code) => reject(new Error(`gradflow playground exited with ${code}: ${out}`)));
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/http:\/\/127\.0\.0\.1:(\d+)\//);
      if (m) {
        clearTimeout(timer);
        resolve({ proc, url: m[0] });
      }
    });
  });
}

/** Poll `fn` in the page until it returns a truthy value. */
async function until(page, what, fn, arg, timeout = 30000) {
  try {
    const h = await page.waitForFunction(fn, arg, { timeout, polling: 100 });
    return h.jsonValue();
  } catch (e) {
    throw new Error(`timed out waiting for ${what}: ${e.message.split('\n')[0]}`);
  }
}

const num = (sel) => Number(document.querySelector(sel).textContent);

test('the playground trains in the browser', { timeout: 115000 }, async () => {
  const started = Date.now();
  const server = await startServer();
  const userDataDir = mkdtempSync(path.join(tmpdir(), 'gradflow-e2e-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1680, height: 1250 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = context.pages()[0] || await context.newPage();
  try {
    const foreign = [];
    const errors = [];
    page.on('request', (r) => { if (!r.url().startsWith(server.url) && !r.url().startsWith('data:') && !r.url().startsWith('blob:')) foreign.push(r.url()); });
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });

    await page.goto(server.url);
    // The default setup: circle, x1 and x2, 4 and 2 tanh neurons, in the address.
    await until(page, 'the first frame', () => document.querySelector('#test-loss').textContent !== '–');
    assert.match(page.url(), /#dataset=circle&.*layers=4%2C2/);
    const before = await page.evaluate(num, '#test-loss');

    // Play: the test loss on the circle falls below 0.2.
    await page.click('#play');
    const reached = await until(page, 'test loss < 0.2', () => {
      const v = Number(document.querySelector('#test-loss').textContent);
      return v < 0.2 ? v : 0;
    }, null, 45000);
    console.log(`test loss ${before} → ${reached} after ${(Date.now() - started) / 1000} s`);
    assert.ok(await page.evaluate(() => Number(document.querySelector('#epoch').textContent.replace(/,/g, '')) > 0));

    // Switch the activation to ReLU: the network restarts and the gradient-flow panel follows.
    let frames = await page.evaluate(() => Number(document.querySelector('#flow-panel').dataset.frames));
    await page.selectOption('#act', 'relu');
    await until(page, 'ReLU in every layer', () =>
      [...document.querySelectorAll('.layer-act')].every((s) => s.value === 'relu') &&
      document.querySelector('#flow-text').textContent.includes('ReLU'));
    await until(page, 'gradient-flow updates', (f) =>
      Number(document.querySelector('#flow-panel').dataset.frames) > f + 20, frames);
    const flow = await page.textContent('#flow-text');
    assert.match(flow, /L1 ReLU: ‖∇W‖ \d\.\de[-+]\d+, flat \d+%, dead \d+/);
    assert.match(flow, /output: ‖∇W‖/);
    assert.match(page.url(), /act=relu%2Crelu/);

    // Switch on x1², x2² and sin x1 (click their nodes), back to tanh, then L1: the weights of
    // features the circle does not need land on exactly zero, and the sparsity shows it.
    for (const id of ['x1sq', 'x2sq', 'sinx1']) {
      const p = await page.evaluate((fid) => {
        const i = FEATURES.findIndex((f) => f.id === fid);
        const n = S.layout.nodes[0][i];
        const r = document.querySelector('#net').getBoundingClientRect();
        return { x: r.left + n.x + n.size / 2, y: r.top + n.y + n.size / 2 };
      }, id);
      await page.mouse.click(p.x, p.y);
      await until(page, `feature ${id} on`, (fid) => S.cfg.features.includes(fid) && S.state.config.features.includes(fid), id);
    }
    await page.selectOption('#act', 'tanh');
    await page.selectOption('#reg', 'l1');
    await page.selectOption('#regrate', '0.003');
    const zeros = await until(page, 'five weights at exactly 0 under L1', () => {
      const m = document.querySelector('#sparsity').textContent.match(/^(\d+) of (\d+)/);
      return m && Number(m[1]) >= 5 ? Number(m[1]) : 0;
    }, null, 40000);
    console.log(`L1: ${zeros} weights exactly 0 after ${(Date.now() - started) / 1000} s`);
    assert.match(page.url(), /features=x1%2Cx2%2Cx1sq%2Cx2sq%2Csinx1&/);
    assert.match(page.url(), /reg=l1&rate=0.003/);
    frames = await page.evaluate(() => Number(document.querySelector('#flow-panel').dataset.frames));
    await until(page, 'gradient-flow updates under L1', (f) =>
      Number(document.querySelector('#flow-panel').dataset.frames) > f + 10, frames);
    await until(page, 'test loss < 0.3 under L1', () => Number(document.querySelector('#test-loss').textContent) < 0.3,
      null, 30000);

    // Step through one example: click a point on the output map.
    const box = await page.locator('#heatmap').boundingBox();
    await page.mouse.click(box.x + box.width * 0.5, box.y + box.height * 0.45);
    await until(page, 'the step-through table', () => document.querySelectorAll('#walk table tr').length > 5);

    // The export is a model TOML and a command.
    const toml = await page.textContent('#toml');
    assert.match(toml, /input = \[5\]/);
    assert.match(toml, /type = "Tanh"/);
    assert.match(await page.textContent('#cli'), /gradflow explain --model playground.toml/);

    await page.click('#play'); // pause
    await until(page, 'paused', () => document.querySelector('#play').getAttribute('aria-label') === 'Run');
    // Paused, so the weights stand still: hovering a link shows its weight, hovering a unit its bias.
    const hover = async (where) => {
      const p = await page.evaluate(where);
      await page.mouse.move(p.x, p.y);
      return until(page, 'a tooltip', () => !document.querySelector('#tip').hidden && document.querySelector('#tip').textContent);
    };
    const tip = await hover(() => {
      const l = links().find((k) => k.v !== 0);
      const r = document.querySelector('#net').getBoundingClientRect();
      return { x: r.left + (l.x0 + l.x1) / 2, y: r.top + (l.y0 + l.y1) / 2 };
    });
    const m = tip.match(/^weight (\S+) \((.+) → (.+)\)$/);
    assert.ok(m, `weight tooltip: ${tip}`);
    assert.ok(await page.evaluate((v) => S.frame.w.flat().some((w) => fmt(w, 4) === v), m[1]), `${m[1]} is a weight`);
    const biasTip = await hover(() => {
      const n = S.layout.nodes[1][0];
      const r = document.querySelector('#net').getBoundingClientRect();
      return { x: r.left + n.x + n.size / 2, y: r.top + n.y + n.size / 2 };
    });
    assert.match(biasTip, /^bias -?\d/);
    await page.mouse.move(0, 0);

    await page.waitForTimeout(300);
    await page.screenshot({ path: SCREENSHOT, fullPage: true });

    // The address carries the whole setup: a reload comes back to it.
    await page.reload();
    await until(page, 'the setup restored from the address', () =>
      document.querySelector('#reg').value === 'l1' && document.querySelector('#act').value === 'tanh' &&
      S.state && S.state.config.features.length === 5 && document.querySelector('#test-loss').textContent !== '–');

    // A deep sigmoid network: the gradient-flow panel shows the gradients vanishing.
    const deep = Array(10).fill(8).join(',');
    await page.goto(`${server.url}#dataset=circle&layers=${deep}&act=${Array(10).fill('sigmoid').join(',')}`);
    await page.click('#play');
    await until(page, 'vanishing gradients reported', () =>
      /vanishing/.test(document.querySelector('#flow-text').textContent) &&
      (document.querySelector('#flow-text').textContent.match(/^L\d+ Sigmoid/gm) || []).length === 10);
    console.log((await page.textContent('#flow-text')).split('\n')[0]);
    await page.click('#play');
    await until(page, 'paused', () => document.querySelector('#play').getAttribute('aria-label') === 'Run');

    // The speed control: at one step per frame, about one step a frame (30 a second); max takes many more.
    await page.selectOption('#speed', '1');
    await until(page, 'one step per frame', () => S.state.config.steps_per_frame === 1);
    assert.match(page.url(), /spf=1/);
    const stepsIn = async (ms) => {
      const s0 = await page.evaluate(() => S.frame.steps);
      await page.click('#play');
      await page.waitForTimeout(ms);
      await page.click('#play');
      await until(page, 'paused', () => document.querySelector('#play').getAttribute('aria-label') === 'Run');
      return (await page.evaluate(() => S.frame.steps)) - s0;
    };
    const slow = await stepsIn(1000);
    await page.selectOption('#speed', '0');
    await until(page, 'the fastest speed', () => S.state.config.steps_per_frame === 0);
    const fast = await stepsIn(1000);
    console.log(`steps in 1 s: ${slow} at 1 per frame, ${fast} at max`);
    assert.ok(slow >= 1 && slow <= 45, `${slow} steps in 1 s at one step per frame`);
    assert.ok(fast > 3 * slow, `max speed took ${fast} steps, one per frame ${slow}`);

    // Upload a CSV of three classes: the page trains on it with softmax over 3.
    const rows = ['x1,x2,label'];
    for (let i = 0; i < 120; i++) {
      const t = i * 0.41;
      rows.push(`${(3 * Math.cos(t)).toFixed(3)},${(3 * Math.sin(t)).toFixed(3)},${i % 3}`);
    }
    await page.setInputFiles('#csv', { name: 'points.csv', mimeType: 'text/csv', buffer: Buffer.from(rows.join('\n')) });
    await until(page, 'the uploaded points', () =>
      S.state.config.dataset === 'csv' && S.state.classes === 3 &&
      /120 uploaded points/.test(document.querySelector('#data-note').textContent) &&
      document.querySelector('.layer-ctl.out .small').textContent === 'softmax over 3');

    // The upload survives a reload: its points cannot go into the address, so the page keeps them in local storage.
    assert.match(page.url(), /dataset=csv/);
    await page.reload();
    await until(page, 'the upload restored after a reload', () =>
      S.state && S.state.config.dataset === 'csv' && S.state.classes === 3 &&
      /120 uploaded points/.test(document.querySelector('#data-note').textContent) &&
      document.querySelector('#test-loss').textContent !== '–');

    assert.deepEqual(foreign, [], 'the page fetched nothing from elsewhere');
    assert.deepEqual(errors, [], 'no errors in the page');
    console.log(`e2e done in ${(Date.now() - started) / 1000} s`);
  } catch (e) {
    await page.screenshot({ path: path.join(tmpdir(), 'gradflow-e2e-failure.png'), fullPage: true }).catch(() => {});
    throw e;
  } finally {
    await context.close();
    server.proc.kill('SIGTERM');
    rmSync(userDataDir, { recursive: true, force: true });
  }
});

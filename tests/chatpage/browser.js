// The chat page in headless Chromium against a real `tuili serve`: a streamed answer with
// its TTFT and tokens/s, the stop button, reasoning and tool calls (from a recorded stream,
// as the test model writes neither), and the errors a person must see: a request the
// server refuses and a server that has stopped. Screenshots go to $TUILI_CHATPAGE_SHOTS.
//
// Env: TUILI_BIN (the tuili binary), TUILI_MODEL_FILE (SmolLM2), TUILI_CHROMIUM (the
// browser), TUILI_CHATPAGE_SHOTS (a folder).
'use strict';

const { chromium } = require('playwright-core');
const { spawn } = require('node:child_process');
const net = require('node:net');
const path = require('node:path');
const assert = require('node:assert/strict');

const CTX = 2048;
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
    s.on('error', reject);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function startServer(port) {
  const log = [];
  const child = spawn(process.env.TUILI_BIN, ['serve', '-m', process.env.TUILI_MODEL_FILE,
    '--host', '127.0.0.1', '--port', String(port), '--model-name', 'smol', '--ctx', String(CTX),
    '--parallel', '2'], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.on('data', (d) => log.push(String(d)));
  child.stderr.on('data', (d) => log.push(String(d)));
  const exited = new Promise((r) => child.on('exit', r));
  for (let i = 0; i < 1200; i++) {
    if (child.exitCode !== null) throw new Error('tuili serve exited:\n' + log.join(''));
    try {
      if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) return { child, log, exited };
    } catch (_) { /* not listening yet */ }
    await sleep(100);
  }
  throw new Error('tuili serve not ready:\n' + log.join(''));
}

// Sends `text` from the composer and waits until the answer is over; returns what the
// page showed: the answer's text, its stats line and the number of redraws while it streamed.
async function ask(page, text, { stopAfterTokens } = {}) {
  const before = await page.locator('.msg.assistant').count();
  await page.evaluate(() => {
    // Counts the answer's redraws before its end, to tell streaming from one late block.
    window.redraws = 0;
    window.observer?.disconnect();
    window.observer = new MutationObserver(() => {
      const last = [...document.querySelectorAll('.msg.assistant')].pop();
      if (last && !last.querySelector('.stats').dataset.done) window.redraws++;
    });
    window.observer.observe(document.getElementById('messages'), { subtree: true, childList: true, characterData: true });
  });
  await page.fill('#prompt', text);
  await page.press('#prompt', 'Enter');
  const answer = page.locator('.msg.assistant').nth(before);
  await answer.waitFor();
  if (stopAfterTokens) {
    await page.waitForFunction((n) => {
      const s = [...document.querySelectorAll('.msg.assistant .stats')].pop();
      const m = s.textContent.match(/~(\d+) tokens/);
      return m && Number(m[1]) >= n;
    }, stopAfterTokens, { timeout: 60000 });
    assert.equal(await page.textContent('#send'), 'Stop');
    await page.click('#send');
  }
  await answer.locator('.stats[data-done="1"]').waitFor({ timeout: 120000 });
  return {
    text: await answer.locator('.body').innerText(),
    stats: await answer.locator('.stats').innerText(),
    ttft: Number(await answer.locator('.stats').getAttribute('data-ttft-ms')),
    tps: Number(await answer.locator('.stats').getAttribute('data-tokens-per-second')),
    error: await answer.locator('.error').isVisible() ? await answer.locator('.error').innerText() : null,
    redraws: await page.evaluate(() => window.redraws),
    answer,
  };
}

async function setting(page, id, value) {
  if (await page.locator('#settings').isHidden()) await page.click('#toggle-settings');
  await page.fill('#' + id, value);
  await page.dispatchEvent('#' + id, 'change');
}

async function metric(base, name) {
  const text = await (await fetch(base + '/metrics')).text();
  const line = text.split('\n').find((l) => l.startsWith(name + ' '));
  return line === undefined ? null : Number(line.split(' ')[1]);
}

// A recorded chat stream with everything SmolLM2 never writes: a thought, Markdown, a
// tool call sent in fragments as OpenAI sends it, and markup that must stay text.
function recordedStream() {
  const chunk = (delta, finish = null) => ({ id: 'chatcmpl-rec', object: 'chat.completion.chunk', created: 0,
    model: 'smol', choices: [{ index: 0, delta, finish_reason: finish }] });
  const events = [
    chunk({ role: 'assistant', content: '' }),
    chunk({ reasoning_content: 'The user wants the weather. ' }),
    chunk({ reasoning_content: 'I should call the tool.' }),
    chunk({ content: '## Plan\n\n1. Look up **Paris**\n2. Answer with `celsius`\n\n' }),
    chunk({ content: '```python\nprint("<b>hi</b>")\n```\n\n| city | temp |\n|---|--:|\n| Paris | 21 |\n\n' }),
    chunk({ content: '<img src=x onerror=alert(1)> [bad](javascript:alert(1)) [ok](https://example.org)' }),
    chunk({ tool_calls: [{ index: 0, id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '' } }] }),
    chunk({ tool_calls: [{ index: 0, function: { arguments: '{"city": ' } }] }),
    chunk({ tool_calls: [{ index: 0, function: { arguments: '"Paris", "unit": "celsius"}' } }] }),
    chunk({}, 'tool_calls'),
    { id: 'chatcmpl-rec', object: 'chat.completion.chunk', created: 0, model: 'smol', choices: [],
      usage: { prompt_tokens: 20, completion_tokens: 9, total_tokens: 29 } },
  ];
  return events.map((e) => `data: ${JSON.stringify(e)}\n\n`).join('') + 'data: [DONE]\n\n';
}

async function main() {
  const shots = process.env.TUILI_CHATPAGE_SHOTS;
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const server = await startServer(port);
  const browser = await chromium.launch({ executablePath: process.env.TUILI_CHROMIUM || '/usr/bin/chromium', args: FLAGS });
  const problems = [];
  // Console errors the browser itself logs for the failures the test provokes.
  const expected = [];
  try {
    const page = await browser.newPage({ viewport: { width: 1000, height: 720 } });
    page.on('pageerror', (e) => problems.push('page error: ' + e.message));
    page.on('console', (m) => {
      if (m.type() === 'error' && !expected.some((re) => re.test(m.text()))) {
        problems.push('console: ' + m.text());
      }
    });
    const resp = await page.goto(base + '/');
    assert.match(resp.headers()['content-security-policy'], /^default-src 'self';/);
    await page.waitForFunction(() => document.querySelector('#model').value === 'smol');

    // 1. A streamed answer, with TTFT and tokens/s.
    await setting(page, 'temperature', '0');
    await setting(page, 'max_tokens', '160');
    await setting(page, 'system', 'You are a helpful assistant. Answer in Markdown.');
    const a = await ask(page, 'Write a Python function that reverses a string, with a short explanation.');
    assert.equal(a.error, null);
    assert.ok(a.text.trim().length > 20, `answer too short: ${a.text}`);
    assert.match(a.stats, /^TTFT \d+ ms · \d+\.\d tok\/s · \d+ tokens · (stop|length)$/);
    assert.ok(a.ttft > 0 && a.tps > 0, a.stats);
    assert.ok(a.redraws >= 3, `the answer was drawn ${a.redraws} times before its end: not streamed`);
    console.log(`answer: ${a.stats} (${a.redraws} redraws while streaming)`);
    if (shots) await page.screenshot({ path: path.join(shots, 'chatpage-answer.png') });

    // 2. Stop during a long answer: the page says so and the server frees the sequence.
    await setting(page, 'max_tokens', '1500');
    await setting(page, 'temperature', '0.8');
    await setting(page, 'seed', '7');
    const s = await ask(page, 'Write a very long story about a dragon who learns to cook, in many chapters.', { stopAfterTokens: 12 });
    assert.match(s.stats, / · stopped$/);
    assert.equal(await page.textContent('#send'), 'Send');
    let running = null;
    for (let i = 0; i < 50 && running !== 0; i++) {
      running = await metric(base, 'tuili_running_sequences');
      if (running !== 0) await sleep(100);
    }
    assert.equal(running, 0, 'the stopped request still runs in the engine');
    const generated = await metric(base, 'tuili_generated_tokens_total');
    await sleep(500);
    assert.equal(await metric(base, 'tuili_generated_tokens_total'), generated);
    const stoppedTokens = Number(s.stats.match(/~?(\d+) tokens/)[1]);
    assert.ok(stoppedTokens < 1500, s.stats);
    console.log(`stopped: ${s.stats}`);

    // 3. Reasoning folded away, tool calls shown, Markdown rendered, markup kept as text.
    await page.route('**/v1/chat/completions', (route) => route.fulfill({
      status: 200, headers: { 'content-type': 'text/event-stream' }, body: recordedStream(),
    }));
    const r = await ask(page, 'What is the weather in Paris?');
    await page.unroute('**/v1/chat/completions');
    const details = r.answer.locator('details.reasoning');
    assert.equal(await details.isVisible(), true);
    assert.equal(await details.evaluate((d) => d.open), false, 'the reasoning is folded');
    assert.equal(await details.locator('.reasoning-body').textContent(), 'The user wants the weather. I should call the tool.');
    const body = r.answer.locator('.body');
    assert.equal(await body.locator('h2').textContent(), 'Plan');
    assert.equal(await body.locator('ol > li').count(), 2);
    assert.equal(await body.locator('ol strong').textContent(), 'Paris');
    assert.equal(await body.locator('.code .lang').textContent(), 'python');
    assert.equal(await body.locator('pre code').textContent(), 'print("<b>hi</b>")');
    assert.equal(await body.locator('td.right').textContent(), '21');
    assert.equal(await body.locator('img, b, script').count(), 0, 'markup in the answer stays text');
    assert.deepEqual(await body.locator('a').evaluateAll((as) => as.map((x) => x.getAttribute('href'))), ['https://example.org']);
    assert.match(r.text, /<img src=x onerror=alert\(1\)>/);
    const call = r.answer.locator('.tool-call');
    assert.equal(await call.locator('.tool-name').textContent(), 'Tool call: get_weather');
    assert.deepEqual(JSON.parse(await call.locator('code').textContent()), { city: 'Paris', unit: 'celsius' });
    assert.match(r.stats, / · 9 tokens · tool_calls$/);
    if (shots) {
      await details.locator('summary').click();
      await r.answer.screenshot({ path: path.join(shots, 'chatpage-tools.png') });
    }

    // 4. Errors: a request the server refuses, then a server that has stopped.
    await page.click('#new-chat');
    await setting(page, 'max_tokens', '100000');
    expected.push(/status of 400 \(Bad Request\)/);
    const e = await ask(page, 'Hello!');
    assert.match(e.error, /^HTTP 400: .*max_tokens is 100000: \d+ exceeds the context length of 2048 tokens/);
    console.log(`refused: ${e.error}`);
    await setting(page, 'max_tokens', '64');
    server.child.kill('SIGTERM');
    await server.exited;
    expected.push(/ERR_CONNECTION_REFUSED/);
    const d = await ask(page, 'Are you still there?');
    assert.match(d.error, /^Cannot reach the server: .*Is tuili serve still running\?$/);
    console.log(`server stopped: ${d.error}`);
    if (shots) await page.screenshot({ path: path.join(shots, 'chatpage-error.png') });
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
    if (server.child.exitCode === null) {
      server.child.kill('SIGTERM');
      await server.exited;
    }
  }
}

main().then(() => console.log('chat page: all checks passed'), (e) => {
  console.error(e);
  process.exit(1);
});

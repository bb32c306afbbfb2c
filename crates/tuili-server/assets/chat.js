// tuili's chat page: streams answers from /v1/chat/completions, renders them as Markdown,
// folds the model's reasoning away and shows its tool calls. No dependencies: the page is
// served from the binary and must work offline, under a CSP that allows nothing inline.
'use strict';

// ---------------------------------------------------------------- Markdown
// A small renderer for what chat models write: headings, paragraphs, emphasis, inline
// code, fenced code, lists (nested by indentation), quotes, tables, rules and links.
// Every piece of text is escaped; links are kept only for http(s) and mailto targets.

function esc(s) {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

function safeUrl(url) {
  return /^(https?:|mailto:)/i.test(url) ? url : null;
}

// Emphasis and links in text that holds no code span; `s` is raw, the result is HTML.
function spans(s) {
  const links = [];
  // Links first, so that their URLs are not read as emphasis.
  s = s.replace(/\[([^\]\n]+)\]\(([^)\s]+)\)/g, (m, label, url) => {
    if (!safeUrl(url)) return m;
    links.push([label, url]);
    return '\u0000' + (links.length - 1) + '\u0000';
  });
  let h = esc(s)
    .replace(/\*\*(?=\S)([\s\S]*?\S)\*\*/g, '<strong>$1</strong>')
    .replace(/__(?=\S)([\s\S]*?\S)__/g, '<strong>$1</strong>')
    .replace(/(^|[^*\w])\*(?=\S)([^*\n]*?\S)\*(?!\w)/g, '$1<em>$2</em>')
    .replace(/(^|[^_\w])_(?=\S)([^_\n]*?\S)_(?!\w)/g, '$1<em>$2</em>')
    .replace(/~~(?=\S)([\s\S]*?\S)~~/g, '<del>$1</del>');
  return h.replace(/\u0000(\d+)\u0000/g, (_, i) => {
    const [label, url] = links[Number(i)];
    return `<a href="${esc(url)}" target="_blank" rel="noopener noreferrer">${spans(label)}</a>`;
  });
}

// One line of inline Markdown: code spans are cut out first and shown verbatim.
function inline(s) {
  let out = '';
  let rest = s;
  for (;;) {
    const open = rest.match(/`+/);
    if (!open) break;
    const fence = open[0];
    const start = open.index + fence.length;
    const end = rest.indexOf(fence, start);
    if (end < 0) break;
    out += spans(rest.slice(0, open.index)) + '<code>' + esc(rest.slice(start, end).trim()) + '</code>';
    rest = rest.slice(end + fence.length);
  }
  return out + spans(rest);
}

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_SEP = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

function cells(line) {
  return line.trim().replace(/^\|/, '').replace(/\|$/, '').split('|').map((c) => c.trim());
}

function codeBlock(lang, code) {
  const label = lang ? `<span class="lang">${esc(lang)}</span>` : '<span class="lang">code</span>';
  return `<div class="code"><div class="code-head">${label}<button type="button" class="copy">Copy</button></div>` +
    `<pre><code>${esc(code)}</code></pre></div>`;
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || /^\s*>/.test(line) || ITEM.test(line);
}

// Markdown text to HTML. An unclosed fence (an answer still streaming) is shown as code.
function renderMarkdown(src) {
  const lines = src.replace(/\r\n?/g, '\n').split('\n');
  let html = '';
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (!line.trim()) { i++; continue; }
    if ((m = line.match(FENCE))) {
      const close = new RegExp('^ {0,3}' + m[1][0] + '{' + m[1].length + ',}\\s*$');
      const body = [];
      i++;
      while (i < lines.length && !close.test(lines[i])) body.push(lines[i++]);
      i++;
      html += codeBlock(m[2], body.join('\n'));
    } else if ((m = line.match(HEADING))) {
      const n = m[1].length;
      html += `<h${n}>${inline(m[2])}</h${n}>`;
      i++;
    } else if (RULE.test(line)) {
      html += '<hr>';
      i++;
    } else if (/^\s*>/.test(line)) {
      const body = [];
      while (i < lines.length && /^\s*>/.test(lines[i])) body.push(lines[i++].replace(/^\s*> ?/, ''));
      html += `<blockquote>${renderMarkdown(body.join('\n'))}</blockquote>`;
    } else if ((m = line.match(ITEM))) {
      [html, i] = [html + list(lines, i), listEnd(lines, i)];
    } else if (line.includes('|') && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1]) && lines[i + 1].includes('-')) {
      const head = cells(line);
      const align = cells(lines[i + 1]).map((c) => (c.endsWith(':') ? (c.startsWith(':') ? 'center' : 'right') : ''));
      const cell = (tag, c, k) => `<${tag}${align[k] ? ` class="${align[k]}"` : ''}>${inline(c)}</${tag}>`;
      let t = '<table><thead><tr>' + head.map((c, k) => cell('th', c, k)).join('') + '</tr></thead><tbody>';
      i += 2;
      while (i < lines.length && lines[i].includes('|') && lines[i].trim()) {
        t += '<tr>' + cells(lines[i]).map((c, k) => cell('td', c, k)).join('') + '</tr>';
        i++;
      }
      html += t + '</tbody></table>';
    } else {
      const para = [];
      while (i < lines.length && lines[i].trim() && (para.length === 0 || !startsBlock(lines[i]))) para.push(lines[i++]);
      html += `<p>${para.map(inline).join('<br>')}</p>`;
    }
  }
  return html;
}

// The list that starts at line `i` (its items' bodies rendered as Markdown themselves).
function list(lines, i) {
  const first = lines[i].match(ITEM);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const items = [];
  const end = listEnd(lines, i);
  let body = null;
  for (let k = i; k < end; k++) {
    const m = lines[k].match(ITEM);
    if (m && m[1].length === indent) {
      if (body) items.push(body);
      body = [m[3]];
    } else {
      body.push(lines[k].replace(new RegExp('^\\s{0,' + (indent + 4) + '}'), ''));
    }
  }
  items.push(body);
  const start = ordered && parseInt(first[2], 10) !== 1 ? ` start="${parseInt(first[2], 10)}"` : '';
  const lis = items.map((b) => {
    const inner = renderMarkdown(b.join('\n'));
    // A tight item is one paragraph: show it without the paragraph's margins.
    const tight = inner.match(/^<p>([\s\S]*?)<\/p>([\s\S]*)$/);
    return '<li>' + (tight && !tight[1].includes('<p>') ? tight[1] + tight[2] : inner) + '</li>';
  });
  return ordered ? `<ol${start}>${lis.join('')}</ol>` : `<ul>${lis.join('')}</ul>`;
}

// The line after the list that starts at `i`: it goes on through its items, their
// indented lines and blank lines followed by more of it.
function listEnd(lines, i) {
  const indent = lines[i].match(ITEM)[1].length;
  let k = i + 1;
  while (k < lines.length) {
    const line = lines[k];
    const m = line.match(ITEM);
    if (m && m[1].length >= indent) { k++; continue; }
    if (!line.trim()) {
      const next = lines[k + 1];
      if (next !== undefined && (/^\s+\S/.test(next) || (next.match(ITEM) || [])[1]?.length >= indent)) { k++; continue; }
      break;
    }
    if (/^\s+\S/.test(line) || !startsBlock(line)) { k++; continue; }
    break;
  }
  return k;
}

// ---------------------------------------------------------------- the conversation

const $ = (id) => document.getElementById(id);
const SETTINGS = ['system', 'temperature', 'top_p', 'max_tokens', 'seed', 'api-key'];
// Past turns sent with each request: {role, content}.
const history = [];
// The request in flight: its AbortController, or null.
let inflight = null;
// Counts conversations, so that an answer stopped by "New chat" stays out of the new one.
let conversation = 0;

function headers() {
  const h = { 'Content-Type': 'application/json' };
  const key = $('api-key').value.trim();
  if (key) h.Authorization = 'Bearer ' + key;
  return h;
}

function banner(text) {
  $('banner').textContent = text || '';
  $('banner').hidden = !text;
}

// The message of an error body in OpenAI's layout (or the body itself).
async function errorText(resp) {
  const text = await resp.text();
  try {
    const e = JSON.parse(text).error;
    if (e && e.message) return `${e.message}${e.param ? ` (${e.param})` : ''}`;
  } catch (_) { /* not JSON: show it as it came */ }
  return text.trim() || resp.statusText;
}

async function loadModels() {
  const select = $('model');
  try {
    const resp = await fetch('/v1/models', { headers: headers() });
    if (!resp.ok) {
      banner(`Cannot list the models: HTTP ${resp.status}: ${await errorText(resp)}` +
        (resp.status === 401 ? ' Enter the API key under Settings.' : ''));
      return;
    }
    const models = (await resp.json()).data || [];
    const keep = select.value;
    select.replaceChildren(...models.map((m) => new Option(m.id, m.id)));
    if (models.some((m) => m.id === keep)) select.value = keep;
    banner('');
  } catch (e) {
    banner(`Cannot reach the server: ${e.message}`);
  }
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function scrollDown() {
  const m = $('messages');
  if (m.scrollHeight - m.scrollTop - m.clientHeight < 120) m.scrollTop = m.scrollHeight;
}

function addUser(text) {
  $('empty').hidden = true;
  const box = el('div', 'msg user');
  box.append(el('div', 'role', 'You'), el('div', 'body plain', text));
  $('messages').append(box);
  $('messages').scrollTop = $('messages').scrollHeight;
}

// The assistant's message box, filled as the stream comes.
class Answer {
  constructor(model) {
    this.box = el('div', 'msg assistant');
    this.reasoning = el('details', 'reasoning');
    this.reasoning.append(el('summary', '', 'Reasoning'), el('div', 'reasoning-body'));
    this.reasoning.hidden = true;
    this.body = el('div', 'body md');
    this.tools = el('div', 'tools');
    this.tools.hidden = true;
    this.error = el('div', 'error');
    this.error.setAttribute('role', 'alert');
    this.error.hidden = true;
    this.stats = el('div', 'stats', 'waiting for the first token…');
    this.box.append(el('div', 'role', model), this.reasoning, this.body, this.tools, this.error, this.stats);
    $('messages').append(this.box);
    this.content = '';
    this.thought = '';
    this.calls = [];
    this.chunks = 0;
    this.t0 = performance.now();
    this.tFirst = null;
    this.usage = null;
    this.finish = null;
    this.drawn = false;
  }

  delta(d) {
    let news = false;
    if (d.reasoning_content) { this.thought += d.reasoning_content; news = true; }
    if (d.content) { this.content += d.content; news = true; }
    for (const t of d.tool_calls || []) {
      const call = this.calls[t.index] || (this.calls[t.index] = { id: '', name: '', arguments: '' });
      if (t.id) call.id = t.id;
      if (t.function && t.function.name) call.name += t.function.name;
      if (t.function && t.function.arguments) call.arguments += t.function.arguments;
      news = true;
    }
    if (!news) return;
    this.chunks++;
    if (this.tFirst === null) this.tFirst = performance.now();
    this.schedule();
  }

  // Redraws at most once a frame, however fast the tokens come.
  schedule() {
    if (this.drawn) return;
    this.drawn = true;
    requestAnimationFrame(() => { this.drawn = false; this.draw(); });
  }

  draw() {
    if (this.thought) {
      this.reasoning.hidden = false;
      this.reasoning.querySelector('.reasoning-body').textContent = this.thought;
      this.reasoning.querySelector('summary').textContent =
        `Reasoning (${this.thought.length} characters)`;
    }
    this.body.innerHTML = renderMarkdown(this.content);
    if (this.calls.length) {
      this.tools.hidden = false;
      this.tools.replaceChildren(...this.calls.filter(Boolean).map(toolCall));
    }
    this.drawStats(false);
    scrollDown();
  }

  drawStats(done) {
    if (done) this.stats.dataset.done = '1';
    if (this.tFirst === null) {
      this.stats.textContent = done ? (this.finish || 'no answer') : 'waiting for the first token…';
      return;
    }
    const ttft = this.tFirst - this.t0;
    const now = performance.now();
    // The usage at the end counts tokens exactly; before it, each chunk is about one.
    const tokens = this.usage ? this.usage.completion_tokens : this.chunks;
    const span = (now - this.tFirst) / 1000;
    const tps = tokens > 1 && span > 0 ? (tokens - 1) / span : null;
    const parts = [`TTFT ${ttft.toFixed(0)} ms`, tps === null ? '– tok/s' : `${tps.toFixed(1)} tok/s`,
      `${this.usage ? '' : '~'}${tokens} tokens`];
    if (this.finish) parts.push(this.finish);
    this.stats.textContent = parts.join(' · ');
    this.stats.dataset.ttftMs = ttft.toFixed(1);
    if (tps !== null) this.stats.dataset.tokensPerSecond = tps.toFixed(2);
  }

  fail(text) {
    this.error.hidden = false;
    this.error.textContent = text;
    this.box.classList.add('failed');
  }

  end(finish) {
    if (finish) this.finish = finish;
    this.draw();
    this.drawStats(true);
  }
}

function toolCall(call) {
  const box = el('div', 'tool-call');
  box.append(el('div', 'tool-name', `Tool call: ${call.name || '(unnamed)'}`));
  let args = call.arguments;
  try { args = JSON.stringify(JSON.parse(args), null, 2); } catch (_) { /* partial: as it came */ }
  const pre = el('pre');
  pre.append(el('code', '', args));
  box.append(pre);
  return box;
}

function number(id, parse) {
  const v = $(id).value.trim();
  return v === '' ? undefined : parse(v);
}

function requestBody(turn) {
  const messages = [];
  const system = $('system').value.trim();
  if (system) messages.push({ role: 'system', content: system });
  messages.push(...history, turn);
  const body = {
    model: $('model').value || undefined,
    messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: number('temperature', Number),
    top_p: number('top_p', Number),
    max_tokens: number('max_tokens', (v) => parseInt(v, 10)),
    seed: number('seed', (v) => parseInt(v, 10)),
  };
  return JSON.stringify(body);
}

// Reads server-sent events from `resp`, calling `onData` with each `data:` payload.
async function readEvents(resp, onData) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const frame = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const data = frame.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
      if (data && onData(data) === false) return;
    }
  }
}

async function send(text) {
  addUser(text);
  const answer = new Answer($('model').value || 'assistant');
  const turn = { role: 'user', content: text };
  const started = conversation;
  const controller = new AbortController();
  inflight = controller;
  setBusy(true);
  let finish = null;
  let ended = false;
  try {
    const resp = await fetch('/v1/chat/completions', {
      method: 'POST', headers: headers(), body: requestBody(turn), signal: controller.signal,
    });
    if (!resp.ok) {
      answer.fail(`HTTP ${resp.status}: ${await errorText(resp)}`);
      answer.end();
      return;
    }
    await readEvents(resp, (data) => {
      if (data === '[DONE]') { ended = true; return false; }
      const chunk = JSON.parse(data);
      if (chunk.error) { answer.fail(`The server stopped the answer: ${chunk.error.message}`); ended = true; return false; }
      if (chunk.usage) answer.usage = chunk.usage;
      for (const c of chunk.choices || []) {
        answer.delta(c.delta || {});
        if (c.finish_reason) finish = c.finish_reason;
      }
      return true;
    });
    if (!ended) answer.fail('The stream ended before the answer did: the server may have stopped.');
    answer.end(finish);
  } catch (e) {
    if (e.name === 'AbortError') {
      answer.end('stopped');
    } else {
      answer.fail(`Cannot reach the server: ${e.message}. Is tuili serve still running?`);
      answer.end();
    }
  } finally {
    // A turn that got an answer (even a stopped one) goes back with the next request;
    // one that failed before any text is left out.
    if ((answer.content || answer.calls.length) && started === conversation) {
      history.push(turn, { role: 'assistant', content: answer.content });
    }
    inflight = null;
    setBusy(false);
  }
}

function setBusy(busy) {
  const b = $('send');
  b.textContent = busy ? 'Stop' : 'Send';
  b.classList.toggle('stop', busy);
  b.type = busy ? 'button' : 'submit';
}

function saveSettings() {
  for (const id of SETTINGS) localStorage.setItem('tuili.' + id, $(id).value);
}

function init() {
  for (const id of SETTINGS) {
    const v = localStorage.getItem('tuili.' + id);
    if (v !== null) $(id).value = v;
    $(id).addEventListener('change', saveSettings);
  }
  $('api-key').addEventListener('change', loadModels);
  $('toggle-settings').addEventListener('click', () => {
    const s = $('settings');
    s.hidden = !s.hidden;
    $('toggle-settings').setAttribute('aria-expanded', String(!s.hidden));
  });
  $('new-chat').addEventListener('click', () => {
    if (inflight) inflight.abort();
    conversation++;
    history.length = 0;
    $('messages').replaceChildren($('empty'));
    $('empty').hidden = false;
  });
  $('composer').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = $('prompt').value.trim();
    if (!text || inflight) return;
    $('prompt').value = '';
    send(text);
  });
  $('send').addEventListener('click', () => { if (inflight) inflight.abort(); });
  $('prompt').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('messages').addEventListener('click', (ev) => {
    const b = ev.target.closest('button.copy');
    if (!b) return;
    const code = b.closest('.code').querySelector('code').textContent;
    navigator.clipboard.writeText(code).then(() => { b.textContent = 'Copied'; }, () => { b.textContent = 'Copy failed'; });
    setTimeout(() => { b.textContent = 'Copy'; }, 1500);
  });
  loadModels();
  $('prompt').focus();
}

if (typeof document !== 'undefined') document.addEventListener('DOMContentLoaded', init);
if (typeof module !== 'undefined') module.exports = { renderMarkdown };
